"""POST /api/v1/products: who may create, what comes back, and how the row is stored.

Covers the create row of API.md's products table (201, `Location`, `ETag`,
the product's fields, the caller as owner, version 1), the 401 for anonymous
callers, the exact storage of prices, the sku uniqueness rule (409) and that
products without a sku do not collide.
"""

import re
from datetime import datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from tests.products.helpers import (
    PRODUCT_FIELDS,
    PRODUCTS,
    count_products,
    create_product,
    decimal_json,
    stored,
)
from tests.support import Account, DatabaseProbe, assert_problem


async def test_create_answers_201_with_location_etag_and_the_product(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    body = {
        "name": "Espresso cup",
        "description": "Porcelain, 80 ml.",
        "price": "12.50",
        "tax": "2.38",
        "sku": "CUP-080-WHT",
    }
    response = await client.post(PRODUCTS, json=body, headers=user.headers)

    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    product = response.json()
    assert set(product) == PRODUCT_FIELDS
    assert isinstance(product["id"], int)
    assert product["id"] > 0
    assert response.headers["location"] == f"{PRODUCTS}/{product['id']}"
    assert response.headers["etag"] == '"1"'
    assert product["name"] == "Espresso cup"
    assert product["description"] == "Porcelain, 80 ml."
    assert product["price"] == 12.5
    assert product["tax"] == 2.38
    assert product["sku"] == "CUP-080-WHT"
    assert product["owner_id"] == user.id
    assert product["version"] == 1

    row = await stored(db, product["id"])
    assert row.owner_id == user.id
    assert row.version == 1
    assert row.price == Decimal("12.50")
    assert row.tax == Decimal("2.38")
    assert row.sku == "CUP-080-WHT"


async def test_created_product_timestamps_are_utc_iso_8601(
    client: httpx.AsyncClient, user: Account
) -> None:
    before = datetime.now().astimezone() - timedelta(minutes=1)
    product = await create_product(client, user)
    after = datetime.now().astimezone() + timedelta(minutes=1)

    for field in ("created_at", "updated_at"):
        moment = datetime.fromisoformat(product[field])
        assert moment.utcoffset() == timedelta(0), product[field]
        assert before <= moment <= after


async def test_optional_fields_left_out_are_null(client: httpx.AsyncClient, user: Account) -> None:
    product = await create_product(client, user, name="Plain", price=3)
    assert product["description"] is None
    assert product["tax"] is None
    assert product["sku"] is None


async def test_the_created_product_can_be_read_at_its_location(
    client: httpx.AsyncClient, user: Account
) -> None:
    response = await client.post(PRODUCTS, json={"name": "Mug", "price": 7}, headers=user.headers)
    assert response.status_code == 201
    read = await client.get(response.headers["location"])
    assert read.status_code == 200
    assert read.json() == response.json()
    assert read.headers["etag"] == response.headers["etag"]


async def test_create_without_a_token_is_401_and_stores_nothing(
    client: httpx.AsyncClient, db: DatabaseProbe
) -> None:
    response = await client.post(PRODUCTS, json={"name": "Mug", "price": 7})
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    assert await count_products(db) == 0


async def test_create_with_a_garbage_token_is_401(
    client: httpx.AsyncClient, db: DatabaseProbe
) -> None:
    response = await client.post(
        PRODUCTS,
        json={"name": "Mug", "price": 7},
        headers={"Authorization": "Bearer not-a-jwt"},
    )
    assert_problem(response, 401)
    # RFC 6750 section 3.1: a token was sent and refused.
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert await count_products(db) == 0


@pytest.mark.parametrize(
    ("sent", "stored_as", "raw"),
    [
        (12.5, Decimal("12.50"), "12.5"),
        ("12.50", Decimal("12.50"), "12.5"),
        ("12.5", Decimal("12.50"), "12.5"),
        (7, Decimal("7.00"), "7"),
        ("19.99", Decimal("19.99"), "19.99"),
        (0.1, Decimal("0.10"), "0.1"),
        (0, Decimal("0.00"), "0"),
        ("0", Decimal("0.00"), "0"),
        (1000000000, Decimal("1000000000.00"), "1000000000"),
        ("1000000000.00", Decimal("1000000000.00"), "1000000000"),
        ("999999999.99", Decimal("999999999.99"), "999999999.99"),
    ],
)
async def test_price_is_accepted_as_number_or_numeric_string_and_returned_as_number(
    client: httpx.AsyncClient,
    user: Account,
    db: DatabaseProbe,
    sent: object,
    stored_as: Decimal,
    raw: str,
) -> None:
    response = await client.post(
        PRODUCTS, json={"name": "Cup", "price": sent, "tax": sent}, headers=user.headers
    )
    assert response.status_code == 201, response.text

    # A JSON number in the raw text, never a string: `"price":12.5`, not `"price":"12.5"`.
    assert re.search(rf'"price":\s*{re.escape(raw)}(\.0+)?[,}}]', response.text), response.text
    assert re.search(rf'"tax":\s*{re.escape(raw)}(\.0+)?[,}}]', response.text), response.text
    body = decimal_json(response)
    assert isinstance(body["price"], Decimal)
    assert isinstance(body["tax"], Decimal)
    assert body["price"] == body["tax"] == stored_as

    row = await stored(db, response.json()["id"])
    assert row.price == stored_as
    assert row.tax == stored_as


async def test_prices_are_stored_exactly_not_as_binary_floats(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    # 0.1 + 0.2 style values: any float on the way would show up in the sum.
    ids = [
        (await create_product(client, user, name=f"Item {cents}", price=f"0.{cents:02d}"))["id"]
        for cents in (1, 2, 10, 20, 70)
    ]
    total = Decimal(0)
    for product_id in ids:
        total += (await stored(db, product_id)).price
    assert total == Decimal("1.03")


async def test_a_product_without_sku_does_not_block_another_without_sku(
    client: httpx.AsyncClient, user: Account, other_user: Account, db: DatabaseProbe
) -> None:
    first = await create_product(client, user, name="First")
    second = await create_product(client, user, name="Second")
    third = await create_product(client, other_user, name="Third", sku=None)
    assert first["sku"] is second["sku"] is third["sku"] is None
    assert await count_products(db) == 3


async def test_duplicate_sku_is_409_and_creates_nothing(
    client: httpx.AsyncClient, user: Account, other_user: Account, db: DatabaseProbe
) -> None:
    await create_product(client, user, sku="CUP-1")

    response = await client.post(
        PRODUCTS, json={"name": "Copy", "price": 1, "sku": "CUP-1"}, headers=other_user.headers
    )

    assert_problem(response, 409, "sku")
    assert await count_products(db) == 1


async def test_a_failed_create_does_not_consume_the_sku(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    invalid = await client.post(
        PRODUCTS, json={"name": "", "price": 1, "sku": "KEEP-ME"}, headers=user.headers
    )
    assert_problem(invalid, 422)
    product = await create_product(client, user, sku="KEEP-ME")
    assert product["sku"] == "KEEP-ME"
    assert await count_products(db) == 1


async def test_owner_is_the_caller_for_every_user(
    client: httpx.AsyncClient, user: Account, other_user: Account, admin: Account
) -> None:
    for account in (user, other_user, admin):
        product = await create_product(client, account, name=f"{account.username}'s")
        assert product["owner_id"] == account.id


async def test_create_with_trailing_slash_is_served_the_same(
    client: httpx.AsyncClient, user: Account
) -> None:
    response = await client.post(
        f"{PRODUCTS}/", json={"name": "Slash", "price": 1}, headers=user.headers
    )
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"{PRODUCTS}/{response.json()['id']}"
    assert response.headers["etag"] == '"1"'
