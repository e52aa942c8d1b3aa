"""What a product body may hold (API.md, products: "Fields a client may send").

Each field's rules on create, the same rules on PUT and PATCH, unknown
fields, malformed JSON, and text that a database or a log could not take
(NUL, lone surrogates): every one a 422 problem naming the field, never a
500, and nothing stored.
"""

import json
from typing import Any

import httpx
import pytest

from tests.products.helpers import (
    PRODUCTS,
    count_products,
    create_product,
    post_raw,
    product_url,
    stored,
)
from tests.support import Account, DatabaseProbe, assert_problem, error_locations

BAD_AMOUNTS: list[Any] = [
    -0.01,
    "-0.01",
    -1,
    1000000000.01,
    "1000000000.01",
    1000000001,
    12.345,
    "12.345",
    "0.001",
    "abc",
    "1_000",
    " 5",
    "5 ",
    "",
    "NaN",
    "Infinity",
    "-Infinity",
    "0x10",
    "1,5",
    True,
    False,
    [],
    [1],
    {},
    {"amount": 1},
]
BAD_AMOUNT_IDS = [json.dumps(value) for value in BAD_AMOUNTS]


async def assert_invalid_create(
    client: httpx.AsyncClient,
    user: Account,
    db: DatabaseProbe,
    body: dict[str, Any],
    field: str,
) -> None:
    response = await client.post(PRODUCTS, json=body, headers=user.headers)
    assert_problem(response, 422)
    assert ["body", field] in error_locations(response), response.text
    assert await count_products(db) == 0


@pytest.mark.parametrize("price", BAD_AMOUNTS, ids=BAD_AMOUNT_IDS)
async def test_bad_price_is_422_at_body_price(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, price: Any
) -> None:
    await assert_invalid_create(client, user, db, {"name": "Cup", "price": price}, "price")


@pytest.mark.parametrize(
    "tax", [-0.01, 1000000000.01, "12.345", "abc", "1_000", " 5", "NaN", True, []]
)
async def test_bad_tax_is_422_at_body_tax(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, tax: Any
) -> None:
    await assert_invalid_create(client, user, db, {"name": "Cup", "price": 1, "tax": tax}, "tax")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
@pytest.mark.parametrize("field", ["price", "tax"])
async def test_non_finite_json_numbers_are_422(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, literal: str, field: str
) -> None:
    # Python's JSON reader accepts these literals; the contract does not.
    extra = "" if field == "price" else ', "price": 1'
    response = await post_raw(client, user, f'{{"name": "Cup", "{field}": {literal}{extra}}}')
    assert_problem(response, 422)
    assert ["body", field] in error_locations(response), response.text
    assert await count_products(db) == 0


async def test_price_is_required_and_may_not_be_null(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    await assert_invalid_create(client, user, db, {"name": "Cup"}, "price")
    await assert_invalid_create(client, user, db, {"name": "Cup", "price": None}, "price")


async def test_tax_may_be_null(client: httpx.AsyncClient, user: Account) -> None:
    product = await create_product(client, user, tax=None)
    assert product["tax"] is None


@pytest.mark.parametrize("name", ["", "x" * 201, None, 5, ["Cup"]])
async def test_bad_name_is_422(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, name: Any
) -> None:
    await assert_invalid_create(client, user, db, {"name": name, "price": 1}, "name")


async def test_name_is_required(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    await assert_invalid_create(client, user, db, {"price": 1}, "name")


@pytest.mark.parametrize("name", ["x", "x" * 200, "Crème brûlée 🍮 日本"])
async def test_names_of_1_to_200_characters_are_accepted(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, name: str
) -> None:
    product = await create_product(client, user, name=name)
    assert product["name"] == name
    assert (await stored(db, product["id"])).name == name


async def test_description_up_to_5000_characters_is_accepted(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    text = ("Line one.\nLine two.\t" * 500)[:5000]
    product = await create_product(client, user, description=text)
    assert product["description"] == text
    assert (await stored(db, product["id"])).description == text


async def test_empty_description_is_accepted(client: httpx.AsyncClient, user: Account) -> None:
    product = await create_product(client, user, description="")
    assert product["description"] == ""


@pytest.mark.parametrize("description", ["x" * 5001, 7, ["text"]])
async def test_bad_description_is_422(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, description: Any
) -> None:
    body = {"name": "Cup", "price": 1, "description": description}
    await assert_invalid_create(client, user, db, body, "description")


@pytest.mark.parametrize("sku", ["A", "abc-XYZ-0123456789", "-", "S" * 64])
async def test_valid_skus_are_accepted(client: httpx.AsyncClient, user: Account, sku: str) -> None:
    product = await create_product(client, user, sku=sku)
    assert product["sku"] == sku


@pytest.mark.parametrize(
    "sku", ["", "S" * 65, "CUP 1", "CUP_1", "CUP.1", "CUP/1", "ÇUP", " CUP", "CUP\n", 123]
)
async def test_bad_sku_is_422(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, sku: Any
) -> None:
    await assert_invalid_create(client, user, db, {"name": "Cup", "price": 1, "sku": sku}, "sku")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("owner_id", 1),
        ("id", 99),
        ("version", 7),
        ("created_at", "2020-01-01T00:00:00Z"),
        ("updated_at", "2020-01-01T00:00:00Z"),
        ("foo", "bar"),
        ("Name", "Cup"),
    ],
)
async def test_unknown_or_read_only_fields_are_422(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, field: str, value: Any
) -> None:
    body = {"name": "Cup", "price": 1, field: value}
    await assert_invalid_create(client, user, db, body, field)


@pytest.mark.parametrize("field", ["name", "description", "sku", "price", "tax"])
@pytest.mark.parametrize("escape", ["\\u0000", "\\ud800", "a\\udc00b"])
async def test_nul_and_lone_surrogates_are_422_never_500(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, field: str, escape: str
) -> None:
    body = {key: value for key, value in {"name": "Cup", "price": 1}.items() if key != field}
    # Written by hand: json.dumps would not send a lone surrogate as an escape.
    raw = json.dumps(body)[:-1] + f', "{field}": "x{escape}y"}}'
    response = await post_raw(client, user, raw)
    assert_problem(response, 422)
    assert ["body", field] in error_locations(response), response.text
    assert await count_products(db) == 0


@pytest.mark.parametrize("escape", ["\\u0000", "\\ud800"])
async def test_unknown_field_named_with_nul_or_surrogate_is_422(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, escape: str
) -> None:
    response = await post_raw(client, user, f'{{"name": "Cup", "price": 1, "x{escape}": 1}}')
    assert_problem(response, 422)
    assert await count_products(db) == 0


@pytest.mark.parametrize(
    "raw",
    [
        "{",
        '{"name": "Cup", "price": 1,}',
        "{'name': 'Cup', 'price': 1}",
        '{"name": "Cup" "price": 1}',
        "not json at all",
        "",
        '"a string"',
        "[]",
        "null",
        "42",
    ],
)
async def test_malformed_or_non_object_json_is_422(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, raw: str
) -> None:
    response = await post_raw(client, user, raw)
    body = assert_problem(response, 422)
    assert body["errors"], body
    assert all(loc[0] == "body" for loc in error_locations(response)), body
    assert await count_products(db) == 0


async def test_invalid_utf8_body_is_422(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    response = await client.post(
        PRODUCTS,
        content=b'{"name": "\xff\xfe", "price": 1}',
        headers={**user.headers, "Content-Type": "application/json"},
    )
    assert_problem(response, 422)
    assert await count_products(db) == 0


async def test_every_problem_is_listed_in_one_422(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    response = await client.post(
        PRODUCTS,
        json={"name": "", "price": "abc", "sku": "no spaces", "foo": 1},
        headers=user.headers,
    )
    assert_problem(response, 422)
    locations = error_locations(response)
    for field in ("name", "price", "sku", "foo"):
        assert ["body", field] in locations, locations
    for error in response.json()["errors"]:
        assert set(error) == {"loc", "msg", "type"}
        assert isinstance(error["msg"], str)
        assert error["msg"]
    assert await count_products(db) == 0


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("price", "12.345"),
        ("price", "abc"),
        ("tax", 1000000000.01),
        ("name", ""),
        ("description", "x" * 5001),
        ("sku", "bad sku"),
        ("sku", "S" * 65),
        ("foo", 1),
    ],
)
async def test_update_bodies_follow_the_create_rules(
    client: httpx.AsyncClient,
    user: Account,
    db: DatabaseProbe,
    method: str,
    field: str,
    value: Any,
) -> None:
    product = await create_product(client, user, sku="ORIG")
    body = {"name": "Cup", "price": 1} if method == "PUT" else {}
    body[field] = value
    response = await client.request(
        method, product_url(product["id"]), json=body, headers=user.headers
    )
    assert_problem(response, 422)
    assert ["body", field] in error_locations(response), response.text
    row = await stored(db, product["id"])
    assert row.version == 1
    assert row.sku == "ORIG"


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.parametrize("literal", ["NaN", "Infinity"])
async def test_update_with_non_finite_price_is_422(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, method: str, literal: str
) -> None:
    product = await create_product(client, user)
    response = await post_raw(
        client,
        user,
        f'{{"name": "Cup", "price": {literal}}}',
        method=method,
        url=product_url(product["id"]),
    )
    assert_problem(response, 422)
    assert ["body", "price"] in error_locations(response), response.text
    assert (await stored(db, product["id"])).version == 1
