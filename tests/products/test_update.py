"""PUT and PATCH /api/v1/products/{id}: replacement, partial change, who may, If-Match.

Covers API.md's rules for changes: PUT replaces (left-out optional fields
become null), PATCH changes only what is sent (null for `name` or `price` is
422), every change raises `version` and the strong `ETag`, owner or admin
only (403 otherwise), `owner_id` can never be changed, `If-Match` with strong
comparison (412 when it does not match), sku conflicts (409), and the order
of checks: 401, 422, 404, 403, 412.
"""

from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.products.helpers import (
    PRODUCT_FIELDS,
    create_product,
    decimal_json,
    post_raw,
    product_url,
    stored,
)
from tests.support import Account, DatabaseProbe, assert_problem, error_locations

FULL = {
    "name": "Tea cup",
    "description": "Bone china.",
    "price": "8.40",
    "tax": "1.60",
    "sku": "TEA-1",
}


async def full_product(client: httpx.AsyncClient, owner: Account) -> dict[str, Any]:
    return await create_product(client, owner, **FULL)


async def test_owner_puts_a_full_replacement(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    product = await full_product(client, user)
    replacement = {
        "name": "Teapot",
        "description": "Cast iron.",
        "price": 45,
        "tax": "8.55",
        "sku": "POT-1",
    }

    response = await client.put(product_url(product["id"]), json=replacement, headers=user.headers)

    assert response.status_code == 200, response.text
    assert response.headers["etag"] == '"2"'
    body = response.json()
    assert set(body) == PRODUCT_FIELDS
    assert body["id"] == product["id"]
    assert body["owner_id"] == user.id
    assert body["version"] == 2
    assert body["created_at"] == product["created_at"]
    assert body["updated_at"] >= product["updated_at"]
    assert (body["name"], body["description"], body["sku"]) == ("Teapot", "Cast iron.", "POT-1")
    numbers = decimal_json(response)
    assert (numbers["price"], numbers["tax"]) == (Decimal(45), Decimal("8.55"))

    row = await stored(db, product["id"])
    assert row.version == 2
    assert (row.name, row.description, row.sku) == ("Teapot", "Cast iron.", "POT-1")
    assert (row.price, row.tax) == (Decimal("45.00"), Decimal("8.55"))
    assert row.owner_id == user.id


async def test_put_without_optional_fields_sets_them_to_null(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    product = await full_product(client, user)

    response = await client.put(
        product_url(product["id"]), json={"name": "Bare", "price": 1}, headers=user.headers
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["description"], body["tax"], body["sku"]) == (None, None, None)
    row = await stored(db, product["id"])
    assert (row.description, row.tax, row.sku) == (None, None, None)
    assert row.version == 2


async def test_put_frees_the_sku_it_drops(client: httpx.AsyncClient, user: Account) -> None:
    product = await full_product(client, user)
    await client.put(
        product_url(product["id"]), json={"name": "Bare", "price": 1}, headers=user.headers
    )
    again = await create_product(client, user, sku=FULL["sku"])
    assert again["sku"] == FULL["sku"]


@pytest.mark.parametrize("missing", ["name", "price"])
async def test_put_without_a_required_field_is_422(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, missing: str
) -> None:
    product = await full_product(client, user)
    body = {key: value for key, value in FULL.items() if key != missing}
    response = await client.put(product_url(product["id"]), json=body, headers=user.headers)
    assert_problem(response, 422)
    assert ["body", missing] in error_locations(response)
    assert (await stored(db, product["id"])).version == 1


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"name": "Renamed"}, {"name": "Renamed"}),
        ({"price": "9.99"}, {"price": Decimal("9.99")}),
        ({"price": 0}, {"price": Decimal("0.00")}),
        ({"tax": None}, {"tax": None}),
        ({"sku": None}, {"sku": None}),
        ({"sku": "NEW-SKU"}, {"sku": "NEW-SKU"}),
        ({"description": None}, {"description": None}),
        ({"description": "Glazed."}, {"description": "Glazed."}),
        ({"name": "Both", "tax": "0.5"}, {"name": "Both", "tax": Decimal("0.50")}),
    ],
)
async def test_patch_changes_only_the_fields_sent(
    client: httpx.AsyncClient,
    user: Account,
    db: DatabaseProbe,
    change: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    product = await full_product(client, user)

    response = await client.patch(product_url(product["id"]), json=change, headers=user.headers)

    assert response.status_code == 200, response.text
    assert response.headers["etag"] == '"2"'
    body = decimal_json(response)
    assert body["version"] == 2
    assert body["owner_id"] == user.id
    row = await stored(db, product["id"])
    assert row.version == 2
    before = {
        "name": FULL["name"],
        "description": FULL["description"],
        "price": Decimal(FULL["price"]),
        "tax": Decimal(FULL["tax"]),
        "sku": FULL["sku"],
    }
    after = {**before, **expected}
    for field, value in after.items():
        assert body[field] == value, field
        assert getattr(row, field) == value, field


@pytest.mark.parametrize("field", ["name", "price"])
async def test_patch_with_null_name_or_price_is_422(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, field: str
) -> None:
    product = await full_product(client, user)
    response = await client.patch(
        product_url(product["id"]), json={field: None}, headers=user.headers
    )
    assert_problem(response, 422)
    assert ["body", field] in error_locations(response)
    row = await stored(db, product["id"])
    assert row.version == 1
    assert (row.name, row.price) == (FULL["name"], Decimal(FULL["price"]))


async def test_empty_patch_changes_nothing_and_keeps_the_version(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    product = await full_product(client, user)

    response = await client.patch(product_url(product["id"]), json={}, headers=user.headers)

    assert response.status_code == 200, response.text
    assert response.headers["etag"] == '"1"'
    assert response.json() == product
    row = await stored(db, product["id"])
    assert row.version == 1
    assert row.updated_at == datetime.fromisoformat(product["updated_at"])


async def test_every_change_raises_the_version_by_one(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    product = await full_product(client, user)
    url = product_url(product["id"])
    for expected in range(2, 6):
        if expected % 2:
            response = await client.put(url, json=FULL, headers=user.headers)
        else:
            response = await client.patch(url, json={"price": expected}, headers=user.headers)
        assert response.status_code == 200, response.text
        assert response.json()["version"] == expected
        assert response.headers["etag"] == f'"{expected}"'
    assert (await stored(db, product["id"])).version == 5


async def test_patch_that_sends_the_same_values_still_counts_as_a_change(
    client: httpx.AsyncClient, user: Account
) -> None:
    product = await full_product(client, user)
    response = await client.patch(
        product_url(product["id"]), json={"name": FULL["name"]}, headers=user.headers
    )
    assert response.status_code == 200
    assert response.json()["version"] == 2


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_admin_changes_anyones_product_and_the_owner_stays(
    client: httpx.AsyncClient, user: Account, admin: Account, db: DatabaseProbe, method: str
) -> None:
    product = await full_product(client, user)
    body = {"name": "Moderated", "price": 1}

    response = await client.request(
        method, product_url(product["id"]), json=body, headers=admin.headers
    )

    assert response.status_code == 200, response.text
    assert response.json()["owner_id"] == user.id
    assert response.json()["name"] == "Moderated"
    row = await stored(db, product["id"])
    assert (row.owner_id, row.name, row.version) == (user.id, "Moderated", 2)


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_another_user_gets_403_and_nothing_changes(
    client: httpx.AsyncClient,
    user: Account,
    other_user: Account,
    db: DatabaseProbe,
    method: str,
) -> None:
    product = await full_product(client, user)

    response = await client.request(
        method,
        product_url(product["id"]),
        json={"name": "Mine", "price": 1},
        headers=other_user.headers,
    )

    assert_problem(response, 403)
    row = await stored(db, product["id"])
    assert (row.name, row.version, row.owner_id) == (FULL["name"], 1, user.id)


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_change_without_a_token_is_401(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, method: str
) -> None:
    product = await full_product(client, user)
    response = await client.request(
        method, product_url(product["id"]), json={"name": "Anon", "price": 1}
    )
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    assert (await stored(db, product["id"])).version == 1


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_change_of_an_unknown_product_is_404(
    client: httpx.AsyncClient, user: Account, method: str
) -> None:
    response = await client.request(
        method, product_url(4242), json={"name": "Ghost", "price": 1}, headers=user.headers
    )
    assert_problem(response, 404, "4242")


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.parametrize("who", ["owner", "admin"])
async def test_no_one_can_change_owner_id(
    client: httpx.AsyncClient,
    user: Account,
    other_user: Account,
    admin: Account,
    db: DatabaseProbe,
    method: str,
    who: str,
) -> None:
    product = await full_product(client, user)
    caller = user if who == "owner" else admin

    response = await client.request(
        method,
        product_url(product["id"]),
        json={"name": "Moved", "price": 1, "owner_id": other_user.id},
        headers=caller.headers,
    )

    assert_problem(response, 422)
    assert ["body", "owner_id"] in error_locations(response)
    row = await stored(db, product["id"])
    assert (row.owner_id, row.version, row.name) == (user.id, 1, FULL["name"])


@pytest.mark.parametrize("field", ["id", "version", "created_at", "foo"])
async def test_patch_with_read_only_or_unknown_field_is_422(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, field: str
) -> None:
    product = await full_product(client, user)
    response = await client.patch(
        product_url(product["id"]), json={field: 99}, headers=user.headers
    )
    assert_problem(response, 422)
    assert ["body", field] in error_locations(response)
    assert (await stored(db, product["id"])).version == 1


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_sku_taken_by_another_product_is_409_and_nothing_changes(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, method: str
) -> None:
    taken = await create_product(client, user, name="Other", sku="TAKEN")
    product = await full_product(client, user)

    response = await client.request(
        method,
        product_url(product["id"]),
        json={"name": "Clash", "price": 1, "sku": "TAKEN"},
        headers=user.headers,
    )

    assert_problem(response, 409, "sku")
    row = await stored(db, product["id"])
    assert (row.sku, row.name, row.version) == (FULL["sku"], FULL["name"], 1)
    assert (await stored(db, taken["id"])).sku == "TAKEN"


async def test_keeping_its_own_sku_is_not_a_conflict(
    client: httpx.AsyncClient, user: Account
) -> None:
    product = await full_product(client, user)
    response = await client.put(product_url(product["id"]), json=FULL, headers=user.headers)
    assert response.status_code == 200, response.text
    assert response.json()["sku"] == FULL["sku"]


# If-Match ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.parametrize("header", ['"2"', "*", '"1", "2"', ' "7" , "2" ', 'W/"1", "2"'])
async def test_if_match_with_the_current_etag_applies_the_change(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, method: str, header: str
) -> None:
    product = await full_product(client, user)
    url = product_url(product["id"])
    assert (await client.patch(url, json={"price": 2}, headers=user.headers)).status_code == 200

    response = await client.request(
        method,
        url,
        json={"name": "Matched", "price": 3},
        headers={**user.headers, "If-Match": header},
    )

    assert response.status_code == 200, response.text
    assert response.headers["etag"] == '"3"'
    row = await stored(db, product["id"])
    assert (row.name, row.version) == ("Matched", 3)


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.parametrize(
    "header",
    [
        '"1"',  # stale
        '"3"',  # from the future
        'W/"2"',  # weak: If-Match compares strongly
        "2",  # not quoted: malformed
        '"02"',  # another tag, though it reads as the same number
        '"2',
        "",
        "W/*",
        '"1", W/"2"',
        "garbage",
    ],
)
async def test_if_match_that_does_not_match_is_412_and_nothing_changes(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, method: str, header: str
) -> None:
    product = await full_product(client, user)
    url = product_url(product["id"])
    assert (await client.patch(url, json={"price": 2}, headers=user.headers)).status_code == 200

    response = await client.request(
        method,
        url,
        json={"name": "Stale", "price": 3},
        headers={**user.headers, "If-Match": header},
    )

    assert_problem(response, 412)
    row = await stored(db, product["id"])
    assert (row.name, row.price, row.version) == (FULL["name"], Decimal("2.00"), 2)


async def test_empty_patch_still_checks_if_match(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    product = await full_product(client, user)
    url = product_url(product["id"])
    response = await client.patch(url, json={}, headers={**user.headers, "If-Match": '"9"'})
    assert_problem(response, 412)
    matched = await client.patch(url, json={}, headers={**user.headers, "If-Match": '"1"'})
    assert matched.status_code == 200
    assert (await stored(db, product["id"])).version == 1


async def test_read_modify_write_with_the_etag_of_a_get(
    client: httpx.AsyncClient, user: Account
) -> None:
    product = await full_product(client, user)
    url = product_url(product["id"])
    read = await client.get(url)
    first = await client.patch(
        url, json={"price": 10}, headers={**user.headers, "If-Match": read.headers["etag"]}
    )
    assert first.status_code == 200
    second = await client.patch(
        url, json={"price": 11}, headers={**user.headers, "If-Match": read.headers["etag"]}
    )
    assert_problem(second, 412)
    third = await client.patch(
        url, json={"price": 11}, headers={**user.headers, "If-Match": first.headers["etag"]}
    )
    assert third.status_code == 200
    assert third.json()["version"] == 3


# Order of checks: 401, 422, 404, 403, 412 ------------------------------------


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_no_token_and_invalid_body_is_401(
    client: httpx.AsyncClient, user: Account, method: str
) -> None:
    product = await full_product(client, user)
    response = await client.request(
        method, product_url(product["id"]), json={"name": "", "price": "abc", "owner_id": 1}
    )
    assert_problem(response, 401)


@pytest.mark.parametrize("method", ["PUT", "PATCH", "POST"])
async def test_no_token_and_malformed_json_is_401(
    client: httpx.AsyncClient, user: Account, method: str
) -> None:
    product = await full_product(client, user)
    url = product_url(product["id"]) if method != "POST" else "/api/v1/products"
    response = await client.request(
        method, url, content=b'{"name": ', headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 401)


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_no_token_and_bad_path_id_is_401(client: httpx.AsyncClient, method: str) -> None:
    response = await client.request(method, product_url("abc"), json={"name": "x", "price": 1})
    assert_problem(response, 401)


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_invalid_body_on_unknown_product_is_422(
    client: httpx.AsyncClient, user: Account, method: str
) -> None:
    response = await client.request(
        method, product_url(4242), json={"name": "", "price": -1}, headers=user.headers
    )
    assert_problem(response, 422)


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_malformed_json_on_unknown_product_is_422(
    client: httpx.AsyncClient, user: Account, method: str
) -> None:
    response = await post_raw(client, user, '{"name": ', method=method, url=product_url(4242))
    assert_problem(response, 422)
    assert ["body"] in error_locations(response)


VALID = {"name": "x", "price": 1}


# Each case breaks several rules at once, always with a stale If-Match; the
# earliest check answers, and the product is left as it was.
@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.parametrize(
    ("by_owner", "known", "body", "status"),
    [
        pytest.param(False, True, {"name": "", "price": 1}, 422, id="others-and-invalid-is-422"),
        pytest.param(False, False, VALID, 404, id="unknown-for-another-user-is-404"),
        pytest.param(False, True, VALID, 403, id="others-product-is-403"),
        pytest.param(True, True, VALID, 412, id="owner-is-412"),
        pytest.param(True, True, {**VALID, "sku": "TAKEN"}, 412, id="sku-conflict-is-412"),
    ],
)
async def test_with_a_stale_if_match_the_earliest_failing_check_answers(
    client: httpx.AsyncClient,
    user: Account,
    other_user: Account,
    db: DatabaseProbe,
    method: str,
    by_owner: bool,
    known: bool,
    body: dict[str, Any],
    status: int,
) -> None:
    await create_product(client, user, name="Other", sku="TAKEN")
    product = await full_product(client, user)
    caller = user if by_owner else other_user

    response = await client.request(
        method,
        product_url(product["id"] if known else 4242),
        json=body,
        headers={**caller.headers, "If-Match": '"9"'},
    )

    assert_problem(response, status)
    row = await stored(db, product["id"])
    assert (row.version, row.name, row.sku) == (1, FULL["name"], FULL["sku"])


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_trailing_slash_changes_the_same_product(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, method: str
) -> None:
    product = await full_product(client, user)
    response = await client.request(
        method,
        product_url(product["id"]) + "/",
        json={"name": "Slashed", "price": 1},
        headers={**user.headers, "If-Match": '"1"'},
    )
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == '"2"'
    assert (await stored(db, product["id"])).name == "Slashed"
