"""DELETE /api/v1/products/{id}: owner or admin, 204, gone; If-Match honoured.

Covers the delete row of API.md's products table, the 403 for other users,
404 for unknown ids, 401 without a token, `If-Match` (412 when stale), and
that a refused delete leaves the row in place.
"""

import httpx
import pytest
from sqlalchemy import select

from app.products.models import Product
from tests.products.helpers import count_products, create_product, product_url, stored
from tests.support import Account, DatabaseProbe, assert_problem


async def test_owner_deletes_with_204_and_the_row_is_gone(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    product = await create_product(client, user, sku="GONE-1")
    keep = await create_product(client, user, name="Keep")

    response = await client.delete(product_url(product["id"]), headers=user.headers)

    assert response.status_code == 204
    assert response.content == b""
    assert await db.get(Product, product["id"]) is None
    assert await db.all(select(Product.id)) == [keep["id"]]
    assert_problem(await client.get(product_url(product["id"])), 404)


async def test_deleting_frees_the_sku(client: httpx.AsyncClient, user: Account) -> None:
    product = await create_product(client, user, sku="REUSE")
    assert (
        await client.delete(product_url(product["id"]), headers=user.headers)
    ).status_code == 204
    again = await create_product(client, user, sku="REUSE")
    assert again["sku"] == "REUSE"


async def test_a_deleted_products_id_is_not_given_to_a_new_product(
    client: httpx.AsyncClient, user: Account
) -> None:
    # Otherwise a client's stale URL, and even its If-Match "1", would hit a stranger's product.
    first = await create_product(client, user, name="First")
    last = await create_product(client, user, name="Last")
    assert (await client.delete(product_url(last["id"]), headers=user.headers)).status_code == 204

    new = await create_product(client, user, name="New")

    assert new["id"] not in (first["id"], last["id"])
    response = await client.delete(
        product_url(last["id"]), headers={**user.headers, "If-Match": '"1"'}
    )
    assert_problem(response, 404)


async def test_admin_deletes_anyones_product(
    client: httpx.AsyncClient, user: Account, admin: Account, db: DatabaseProbe
) -> None:
    product = await create_product(client, user)
    response = await client.delete(product_url(product["id"]), headers=admin.headers)
    assert response.status_code == 204
    assert await count_products(db) == 0


async def test_another_user_gets_403_and_the_row_stays(
    client: httpx.AsyncClient, user: Account, other_user: Account, db: DatabaseProbe
) -> None:
    product = await create_product(client, user)
    response = await client.delete(product_url(product["id"]), headers=other_user.headers)
    assert_problem(response, 403)
    assert (await stored(db, product["id"])).version == 1


async def test_delete_without_a_token_is_401_and_the_row_stays(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    product = await create_product(client, user)
    response = await client.delete(product_url(product["id"]))
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    assert await count_products(db) == 1


async def test_delete_of_an_unknown_product_is_404(
    client: httpx.AsyncClient, user: Account, other_user: Account
) -> None:
    await create_product(client, user)
    for caller in (user, other_user):
        assert_problem(await client.delete(product_url(777), headers=caller.headers), 404, "777")


async def test_second_delete_is_404(client: httpx.AsyncClient, user: Account) -> None:
    product = await create_product(client, user)
    url = product_url(product["id"])
    assert (await client.delete(url, headers=user.headers)).status_code == 204
    assert_problem(await client.delete(url, headers=user.headers), 404)


@pytest.mark.parametrize("product_id", ["0", "-1", "abc", str(2**63)])
async def test_delete_with_a_bad_path_id_is_422(
    client: httpx.AsyncClient, user: Account, product_id: str
) -> None:
    assert_problem(await client.delete(product_url(product_id), headers=user.headers), 422)


@pytest.mark.parametrize("header", ['"1"', 'W/"2"', "2", '"3"', "garbage"])
async def test_delete_with_if_match_that_does_not_match_is_412_and_the_row_stays(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, header: str
) -> None:
    product = await create_product(client, user)
    url = product_url(product["id"])
    assert (await client.patch(url, json={"price": 2}, headers=user.headers)).status_code == 200

    response = await client.delete(url, headers={**user.headers, "If-Match": header})

    assert_problem(response, 412)
    assert (await stored(db, product["id"])).version == 2


@pytest.mark.parametrize("header", ['"2"', "*", '"1", "2"'])
async def test_delete_with_matching_if_match_is_204(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, header: str
) -> None:
    product = await create_product(client, user)
    url = product_url(product["id"])
    assert (await client.patch(url, json={"price": 2}, headers=user.headers)).status_code == 200

    response = await client.delete(url, headers={**user.headers, "If-Match": header})

    assert response.status_code == 204
    assert await count_products(db) == 0


async def test_delete_checks_permission_before_if_match(
    client: httpx.AsyncClient, user: Account, other_user: Account, db: DatabaseProbe
) -> None:
    product = await create_product(client, user)
    response = await client.delete(
        product_url(product["id"]), headers={**other_user.headers, "If-Match": '"9"'}
    )
    assert_problem(response, 403)
    assert await count_products(db) == 1


async def test_delete_checks_existence_before_permission_and_if_match(
    client: httpx.AsyncClient, user: Account, other_user: Account
) -> None:
    await create_product(client, user)
    response = await client.delete(
        product_url(999), headers={**other_user.headers, "If-Match": '"9"'}
    )
    assert_problem(response, 404)


async def test_delete_with_trailing_slash(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    product = await create_product(client, user)
    response = await client.delete(product_url(product["id"]) + "/", headers=user.headers)
    assert response.status_code == 204
    assert await count_products(db) == 0
