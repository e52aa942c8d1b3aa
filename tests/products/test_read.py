"""GET /api/v1/products/{id}: the product with its ETag, conditional reads, path ids.

Covers "GET /api/v1/products/{id} | anyone | 200 product, ETag", the strong
ETag (`"3"`), `If-None-Match` (304, compared weakly as RFC 9110 asks for GET,
`*` and lists), 404 for an unknown id, 422 for a path id that is not a
positive integer, and the trailing slash rule.
"""

import httpx
import pytest

from tests.products.helpers import PRODUCT_FIELDS, create_product, product_url
from tests.support import Account, assert_problem, error_locations


async def test_anyone_reads_a_product_with_its_etag(
    client: httpx.AsyncClient, user: Account
) -> None:
    created = await create_product(client, user, description="Blue", sku="B-1", tax="1.10")

    response = await client.get(product_url(created["id"]))

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["etag"] == '"1"'
    body = response.json()
    assert set(body) == PRODUCT_FIELDS
    assert body == created


async def test_signed_in_users_read_others_products(
    client: httpx.AsyncClient, user: Account, other_user: Account
) -> None:
    created = await create_product(client, user)
    response = await client.get(product_url(created["id"]), headers=other_user.headers)
    assert response.status_code == 200
    assert response.json() == created


async def test_etag_follows_the_version(client: httpx.AsyncClient, user: Account) -> None:
    created = await create_product(client, user)
    url = product_url(created["id"])
    for expected in (2, 3):
        patched = await client.patch(url, json={"price": expected}, headers=user.headers)
        assert patched.status_code == 200
        response = await client.get(url)
        assert response.headers["etag"] == f'"{expected}"'
        assert response.json()["version"] == expected


async def test_unknown_id_is_404_problem(client: httpx.AsyncClient, user: Account) -> None:
    await create_product(client, user)
    response = await client.get(product_url(999))
    assert_problem(response, 404, "999")


async def test_deleted_product_is_404(client: httpx.AsyncClient, user: Account) -> None:
    created = await create_product(client, user)
    url = product_url(created["id"])
    assert (await client.delete(url, headers=user.headers)).status_code == 204
    assert_problem(await client.get(url), 404)


@pytest.mark.parametrize(
    "product_id", ["0", "-1", "abc", "1.5", "1e3", str(2**63), "99999999999999999999999", "%00"]
)
async def test_path_id_that_is_not_a_positive_integer_is_422(
    client: httpx.AsyncClient, product_id: str
) -> None:
    response = await client.get(product_url(product_id))
    assert_problem(response, 422)
    assert ["path", "product_id"] in error_locations(response)


@pytest.mark.parametrize("product_id", ["%201", "1_0", "1.0", "+1"])
async def test_path_id_written_unlike_a_plain_integer_is_422(
    client: httpx.AsyncClient, product_id: str
) -> None:
    response = await client.get(product_url(product_id))
    assert_problem(response, 422)
    assert ["path", "product_id"] in error_locations(response)


async def test_largest_positive_id_is_a_plain_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get(product_url(2**63 - 1)), 404)


async def test_if_none_match_with_current_etag_is_304_with_etag_and_no_body(
    client: httpx.AsyncClient, user: Account
) -> None:
    created = await create_product(client, user)
    response = await client.get(product_url(created["id"]), headers={"If-None-Match": '"1"'})
    assert response.status_code == 304
    assert response.headers["etag"] == '"1"'
    assert response.content == b""


@pytest.mark.parametrize(
    "header",
    [
        'W/"2"',
        "*",
        '"2"',
        '"7", "2"',
        '"7",W/"2"',
        'W/"1", "2", "3"',
        ' "2" ',
    ],
)
async def test_if_none_match_matches_weakly_star_and_lists(
    client: httpx.AsyncClient, user: Account, header: str
) -> None:
    created = await create_product(client, user)
    url = product_url(created["id"])
    assert (await client.patch(url, json={"name": "v2"}, headers=user.headers)).status_code == 200

    response = await client.get(url, headers={"If-None-Match": header})

    assert response.status_code == 304, response.text
    assert response.headers["etag"] == '"2"'
    assert response.content == b""


@pytest.mark.parametrize("header", ['"1"', 'W/"1"', '"1", "3"', '"02"', '"two"', "2", "garbage"])
async def test_if_none_match_that_does_not_match_gets_the_product(
    client: httpx.AsyncClient, user: Account, header: str
) -> None:
    created = await create_product(client, user)
    url = product_url(created["id"])
    assert (await client.patch(url, json={"name": "v2"}, headers=user.headers)).status_code == 200

    response = await client.get(url, headers={"If-None-Match": header})

    assert response.status_code == 200, response.text
    assert response.headers["etag"] == '"2"'
    assert response.json()["name"] == "v2"


async def test_if_none_match_on_unknown_product_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get(product_url(404), headers={"If-None-Match": "*"})
    assert_problem(response, 404)


async def test_trailing_slash_is_served_like_the_path_without_it(
    client: httpx.AsyncClient, user: Account
) -> None:
    created = await create_product(client, user)
    plain = await client.get(product_url(created["id"]))
    slashed = await client.get(product_url(created["id"]) + "/")
    assert slashed.status_code == 200
    assert slashed.json() == plain.json()
    assert slashed.headers["etag"] == plain.headers["etag"]

    conditional = await client.get(
        product_url(created["id"]) + "/", headers={"If-None-Match": '"1"'}
    )
    assert conditional.status_code == 304
    assert_problem(await client.get(product_url(999) + "/"), 404)
