"""Concurrent changes to one product (API.md: "Every change increments version ...").

Real concurrent requests through the ASGI app on a real database: with the
same `If-Match` exactly one change wins and the others get 412; without
`If-Match` every change is applied one after another, each raising the
version by one, none lost. Racing creates with one sku: one wins, the rest 409.
"""

import asyncio
from collections import Counter
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import select

from app.products.models import Product
from tests.products.helpers import PRODUCTS, count_products, create_product, product_url, stored
from tests.support import Account, DatabaseProbe, assert_problem

# Also run with the service behind PgBouncer in transaction mode (tests/conftest.py).
pytestmark = pytest.mark.concurrency

RACERS = 20


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
async def test_two_changes_with_the_same_if_match_exactly_one_wins(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, method: str
) -> None:
    product = await create_product(client, user, price="1.00")
    url = product_url(product["id"])
    headers = {**user.headers, "If-Match": '"1"'}

    responses = await asyncio.gather(
        client.request(method, url, json={"name": "A", "price": "10.00"}, headers=headers),
        client.request(method, url, json={"name": "B", "price": "20.00"}, headers=headers),
    )

    assert sorted(r.status_code for r in responses) == [200, 412], [r.text for r in responses]
    winner = next(r for r in responses if r.status_code == 200)
    loser = next(r for r in responses if r.status_code == 412)
    assert_problem(loser, 412)
    assert winner.headers["etag"] == '"2"'
    row = await stored(db, product["id"])
    assert row.version == 2
    assert (row.name, row.price) == (winner.json()["name"], Decimal(str(winner.json()["price"])))


async def test_many_changes_with_the_same_if_match_exactly_one_wins(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    product = await create_product(client, user)
    url = product_url(product["id"])
    headers = {**user.headers, "If-Match": '"1"'}

    responses = await asyncio.gather(
        *(client.patch(url, json={"price": n}, headers=headers) for n in range(1, 11))
    )

    assert Counter(r.status_code for r in responses) == {200: 1, 412: 9}
    winner = next(r for r in responses if r.status_code == 200)
    row = await stored(db, product["id"])
    assert row.version == 2
    assert row.price == Decimal(winner.json()["price"]).quantize(Decimal("0.01"))


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
async def test_concurrent_changes_without_if_match_all_apply_in_turn(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, method: str
) -> None:
    product = await create_product(client, user, price="0.00")
    url = product_url(product["id"])

    responses = await asyncio.gather(
        *(
            client.request(
                method, url, json={"name": f"Racer {n}", "price": n}, headers=user.headers
            )
            for n in range(1, RACERS + 1)
        )
    )

    assert [r.status_code for r in responses] == [200] * RACERS, [r.text for r in responses]
    versions = sorted(r.json()["version"] for r in responses)
    assert versions == list(range(2, RACERS + 2))
    for response in responses:
        assert response.headers["etag"] == f'"{response.json()["version"]}"'
    row = await stored(db, product["id"])
    assert row.version == RACERS + 1
    last = next(r for r in responses if r.json()["version"] == RACERS + 1)
    assert row.price == Decimal(last.json()["price"]).quantize(Decimal("0.01"))
    assert row.name == last.json()["name"]


async def test_concurrent_patches_of_different_fields_are_not_lost(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    product = await create_product(client, user)
    url = product_url(product["id"])
    changes = [
        {"name": "New name"},
        {"description": "New description"},
        {"price": "3.21"},
        {"tax": "0.42"},
        {"sku": "NEW-SKU"},
    ]

    responses = await asyncio.gather(
        *(client.patch(url, json=change, headers=user.headers) for change in changes)
    )

    assert [r.status_code for r in responses] == [200] * len(changes)
    row = await stored(db, product["id"])
    assert row.version == 1 + len(changes)
    assert (row.name, row.description, row.sku) == ("New name", "New description", "NEW-SKU")
    assert (row.price, row.tax) == (Decimal("3.21"), Decimal("0.42"))


async def test_concurrent_deletes_one_204_the_rest_404(
    client: httpx.AsyncClient, user: Account, admin: Account, db: DatabaseProbe
) -> None:
    product = await create_product(client, user)
    url = product_url(product["id"])
    callers = [user, admin] * 3

    responses = await asyncio.gather(*(client.delete(url, headers=c.headers) for c in callers))

    assert Counter(r.status_code for r in responses) == {204: 1, 404: 5}
    assert await count_products(db) == 0


async def test_change_racing_a_delete_never_resurrects_the_product(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    product = await create_product(client, user)
    url = product_url(product["id"])

    patched, deleted = await asyncio.gather(
        client.patch(url, json={"price": 5}, headers=user.headers),
        client.delete(url, headers=user.headers),
    )

    assert deleted.status_code == 204
    assert patched.status_code in (200, 404)
    assert await db.get(Product, product["id"]) is None


async def test_racing_creates_with_one_sku_one_wins_the_rest_409(
    client: httpx.AsyncClient, user: Account, other_user: Account, db: DatabaseProbe
) -> None:
    callers = [user, other_user] * 5

    responses = await asyncio.gather(
        *(
            client.post(
                PRODUCTS,
                json={"name": f"Racer {i}", "price": 1, "sku": "ONLY-ONE"},
                headers=c.headers,
            )
            for i, c in enumerate(callers)
        )
    )

    assert Counter(r.status_code for r in responses) == {201: 1, 409: 9}
    for response in responses:
        if response.status_code == 409:
            assert_problem(response, 409, "sku")
    assert await db.all(select(Product.sku)) == ["ONLY-ONE"]


async def test_racing_updates_to_one_sku_one_wins_the_rest_409(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    products = [await create_product(client, user, name=f"P{i}") for i in range(5)]

    responses = await asyncio.gather(
        *(
            client.patch(product_url(p["id"]), json={"sku": "CLAIMED"}, headers=user.headers)
            for p in products
        )
    )

    assert Counter(r.status_code for r in responses) == {200: 1, 409: 4}
    assert await db.all(select(Product.sku).where(Product.sku.is_not(None))) == ["CLAIMED"]
    versions = await db.all(select(Product.version).order_by(Product.version))
    assert versions == [1, 1, 1, 1, 2]
