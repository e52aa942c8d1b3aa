"""User administration: GET /api/v1/users and GET, PATCH, DELETE /api/v1/users/{id}.

Covers the Users section of API.md on the admin routes (403 for a
non-admin, 404 for an unknown id, the page of users ordered by id, role and
is_active changes that take effect at once, deletion with the user's
products) and the General rules they meet: path ids that are not positive
integers get 422, and the order in which checks answer (authentication,
validation, existence, permission).
"""

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.core.models import MAX_ID
from app.products.models import Product
from app.users.models import User
from tests.support import (
    Account,
    DatabaseProbe,
    assert_problem,
    assert_unauthenticated,
    bearer,
    create_account,
    error_locations,
    login,
)
from tests.users.common import (
    ME,
    assert_locked_out,
    assert_user_body,
    assert_utc_time,
    create_product,
    stored_user,
    user_count,
)

USERS = "/api/v1/users"


def user_url(user_id: object) -> str:
    return f"{USERS}/{user_id}"


async def snapshot(db: DatabaseProbe, user_id: int) -> dict[str, Any]:
    """Every stored column of a user, to show that a refused request changed nothing."""
    stored = await stored_user(db, user_id)
    return {column: getattr(stored, column) for column in User.__table__.columns.keys()}  # noqa: SIM118


# Each admin route, with a valid body where it takes one: (method, path template, body).
ADMIN_ROUTES = [
    pytest.param("GET", USERS, None, id="list"),
    pytest.param("GET", USERS + "/{id}", None, id="read"),
    pytest.param("PATCH", USERS + "/{id}", {"full_name": "Changed"}, id="patch"),
    pytest.param("DELETE", USERS + "/{id}", None, id="delete"),
]
ROUTES_WITH_ID = ADMIN_ROUTES[1:]


async def test_admin_reads_any_user(
    client: httpx.AsyncClient, admin: Account, user: Account
) -> None:
    response = await client.get(user_url(user.id), headers=admin.headers)

    assert response.status_code == 200, response.text
    body = assert_user_body(response.json())
    own_view = (await client.get(ME, headers=user.headers)).json()
    assert body == own_view
    assert (body["id"], body["username"], body["role"]) == (user.id, "alice", "user")


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
async def test_a_normal_user_gets_403_on_every_admin_route(
    client: httpx.AsyncClient,
    user: Account,
    other_user: Account,
    db: DatabaseProbe,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    before = await snapshot(db, other_user.id)

    response = await client.request(
        method, path.format(id=other_user.id), json=body, headers=user.headers
    )

    assert_problem(response, 403, "admin")
    assert await snapshot(db, other_user.id) == before


@pytest.mark.parametrize(("method", "path", "body"), ROUTES_WITH_ID)
async def test_a_normal_user_gets_403_even_on_their_own_id(
    client: httpx.AsyncClient,
    user: Account,
    db: DatabaseProbe,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    before = await snapshot(db, user.id)

    response = await client.request(
        method, path.format(id=user.id), json=body, headers=user.headers
    )

    assert_problem(response, 403)
    assert await snapshot(db, user.id) == before


async def test_a_normal_user_cannot_make_themselves_admin(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    response = await client.patch(user_url(user.id), json={"role": "admin"}, headers=user.headers)

    assert_problem(response, 403)
    assert (await stored_user(db, user.id)).role == "user"
    assert_problem(await client.get(USERS, headers=user.headers), 403)


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-token"),
        pytest.param({"Authorization": "Bearer garbage"}, id="bad-token"),
    ],
)
async def test_without_a_valid_token_every_admin_route_gets_401(
    client: httpx.AsyncClient,
    user: Account,
    db: DatabaseProbe,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    headers: dict[str, str],
) -> None:
    before = await snapshot(db, user.id)

    response = await client.request(method, path.format(id=user.id), json=body, headers=headers)

    assert_unauthenticated(response)
    assert await snapshot(db, user.id) == before


@pytest.mark.parametrize(("method", "path", "body"), ROUTES_WITH_ID)
@pytest.mark.parametrize("missing_id", [999_999, MAX_ID])
async def test_an_unknown_id_gets_404(
    client: httpx.AsyncClient,
    admin: Account,
    db: DatabaseProbe,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    missing_id: int,
) -> None:
    response = await client.request(
        method, path.format(id=missing_id), json=body, headers=admin.headers
    )

    assert_problem(response, 404, str(missing_id))
    assert await user_count(db) == 1


@pytest.mark.parametrize(("method", "path", "body"), ROUTES_WITH_ID)
@pytest.mark.parametrize("bad_id", ["0", "-1", "abc", str(2**63), "1.5", "1e3", "%20"])
async def test_an_id_that_is_not_a_positive_integer_gets_422(
    client: httpx.AsyncClient,
    admin: Account,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    bad_id: str,
) -> None:
    response = await client.request(
        method, path.format(id=bad_id), json=body, headers=admin.headers
    )

    assert_problem(response, 422)
    assert error_locations(response) == [["path", "user_id"]]


async def test_the_list_is_a_page_of_users_ordered_by_id(
    client: httpx.AsyncClient, admin: Account, user: Account, other_user: Account
) -> None:
    extra = [await create_account(client, name) for name in ("carol", "dave", "erin")]

    response = await client.get(USERS, headers=admin.headers)

    assert response.status_code == 200, response.text
    page = response.json()
    assert set(page) == {"items", "total", "limit", "offset"}
    assert (page["total"], page["limit"], page["offset"]) == (6, 20, 0)
    for item in page["items"]:
        assert_user_body(item)
    ids = [item["id"] for item in page["items"]]
    assert ids == sorted(ids)
    assert set(ids) == {admin.id, user.id, other_user.id, *(a.id for a in extra)}
    by_name = {item["username"]: item for item in page["items"]}
    assert by_name["root"]["role"] == "admin"
    assert by_name["alice"]["role"] == "user"
    assert by_name["alice"]["email"] == "alice@example.com"


async def test_the_list_pages_through_with_limit_and_offset(
    client: httpx.AsyncClient, admin: Account
) -> None:
    for index in range(6):
        await create_account(client, f"user{index}")
    everyone = (await client.get(USERS, headers=admin.headers)).json()["items"]
    assert len(everyone) == 7

    seen = []
    for offset in range(0, 7, 3):
        response = await client.get(
            USERS, params={"limit": 3, "offset": offset}, headers=admin.headers
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert (page["total"], page["limit"], page["offset"]) == (7, 3, offset)
        assert len(page["items"]) == min(3, 7 - offset)
        seen.extend(page["items"])
    assert seen == everyone

    beyond = (await client.get(USERS, params={"offset": 50}, headers=admin.headers)).json()
    assert (beyond["items"], beyond["total"], beyond["offset"]) == ([], 7, 50)


@pytest.mark.parametrize("limit", [1, 100])
async def test_the_list_accepts_limit_at_its_bounds(
    client: httpx.AsyncClient, admin: Account, user: Account, limit: int
) -> None:
    response = await client.get(USERS, params={"limit": limit}, headers=admin.headers)
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["limit"] == limit
    assert len(page["items"]) == min(limit, 2)
    assert page["total"] == 2


@pytest.mark.parametrize(
    ("params", "location"),
    [
        pytest.param({"limit": 0}, ["query", "limit"], id="limit-0"),
        pytest.param({"limit": 101}, ["query", "limit"], id="limit-101"),
        pytest.param({"limit": -1}, ["query", "limit"], id="limit-negative"),
        pytest.param({"limit": "ten"}, ["query", "limit"], id="limit-text"),
        pytest.param({"limit": "2.5"}, ["query", "limit"], id="limit-fraction"),
        pytest.param({"offset": -1}, ["query", "offset"], id="offset-negative"),
        pytest.param({"offset": "x"}, ["query", "offset"], id="offset-text"),
        pytest.param({"offset": str(2**64)}, ["query", "offset"], id="offset-huge"),
    ],
)
async def test_the_list_refuses_a_bad_limit_or_offset(
    client: httpx.AsyncClient, admin: Account, params: dict[str, Any], location: list[str]
) -> None:
    response = await client.get(USERS, params=params, headers=admin.headers)
    assert_problem(response, 422)
    assert error_locations(response) == [location]


async def test_the_list_ignores_unknown_query_parameters(
    client: httpx.AsyncClient, admin: Account, user: Account
) -> None:
    response = await client.get(
        USERS, params={"role": "admin", "sort": "-id", "page": "x"}, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    assert [item["id"] for item in response.json()["items"]] == sorted([admin.id, user.id])


async def test_the_list_reflects_deletions_in_its_total(
    client: httpx.AsyncClient, admin: Account, user: Account, other_user: Account
) -> None:
    assert (await client.delete(ME, headers=user.headers)).status_code == 204

    page = (await client.get(USERS, headers=admin.headers)).json()
    assert page["total"] == 2
    assert [item["id"] for item in page["items"]] == [admin.id, other_user.id]


async def test_admin_patch_changes_role_active_flag_and_profile(
    client: httpx.AsyncClient, admin: Account, user: Account, db: DatabaseProbe
) -> None:
    changes = {
        "username": "alice_admin",
        "email": "alice.admin@example.org",
        "full_name": "Alice Liddell",
        "role": "admin",
        "is_active": True,
    }
    before = await stored_user(db, user.id)

    response = await client.patch(user_url(user.id), json=changes, headers=admin.headers)

    assert response.status_code == 200, response.text
    body = assert_user_body(response.json())
    assert {key: body[key] for key in changes} == changes
    assert body["id"] == user.id
    assert assert_utc_time(body["created_at"]) == before.created_at
    stored = await stored_user(db, user.id)
    assert {key: getattr(stored, key) for key in changes} == changes
    assert stored.password_hash == before.password_hash


@pytest.mark.parametrize(
    ("changes", "column", "expected"),
    [
        pytest.param({"role": "admin"}, "role", "admin", id="role"),
        pytest.param({"is_active": False}, "is_active", False, id="is_active"),
        pytest.param({"full_name": "Al"}, "full_name", "Al", id="full_name"),
        pytest.param({"email": "a@b.example"}, "email", "a@b.example", id="email"),
        pytest.param({"username": "alicia"}, "username", "alicia", id="username"),
    ],
)
async def test_admin_patch_changes_only_the_fields_sent(
    client: httpx.AsyncClient,
    admin: Account,
    user: Account,
    db: DatabaseProbe,
    changes: dict[str, Any],
    column: str,
    expected: Any,
) -> None:
    before = await snapshot(db, user.id)

    response = await client.patch(user_url(user.id), json=changes, headers=admin.headers)

    assert response.status_code == 200, response.text
    after = await snapshot(db, user.id)
    assert after[column] == expected
    unchanged = set(before) - {column, "updated_at", "token_version"}
    assert {key: after[key] for key in unchanged} == {key: before[key] for key in unchanged}


async def test_admin_patch_null_full_name_clears_it(
    client: httpx.AsyncClient, admin: Account, user: Account, db: DatabaseProbe
) -> None:
    await client.patch(ME, json={"full_name": "Alice"}, headers=user.headers)

    response = await client.patch(
        user_url(user.id), json={"full_name": None}, headers=admin.headers
    )

    assert response.status_code == 200, response.text
    assert response.json()["full_name"] is None
    assert (await stored_user(db, user.id)).full_name is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("is_active", "yes"),
        ("is_active", "true"),
        ("is_active", 1),
        ("is_active", None),
        ("role", "root"),
        ("role", "ADMIN"),
        ("role", ""),
        ("role", None),
        ("role", ["admin"]),
        ("username", None),
        ("username", "no spaces allowed"),
        ("email", None),
        ("email", "nope"),
        ("full_name", "f" * 201),
        ("id", 42),
        ("password", "a new password here"),
        ("password_hash", "$argon2id$v=19$m=64,t=1,p=1$abc$def"),
        ("created_at", "2020-01-01T00:00:00Z"),
        ("token_version", 9),
    ],
)
async def test_admin_patch_with_a_bad_field_gets_422_and_changes_nothing(
    client: httpx.AsyncClient,
    admin: Account,
    user: Account,
    db: DatabaseProbe,
    field: str,
    value: Any,
) -> None:
    before = await snapshot(db, user.id)

    response = await client.patch(
        user_url(user.id), json={"full_name": "Ignored", field: value}, headers=admin.headers
    )

    assert_problem(response, 422)
    assert error_locations(response) == [["body", field]]
    assert await snapshot(db, user.id) == before


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"username": "bob"}, id="username"),
        pytest.param({"username": "BOB"}, id="username-other-case"),
        pytest.param({"email": "bob@example.com"}, id="email"),
        pytest.param({"email": "Bob@Example.com"}, id="email-other-case"),
    ],
)
async def test_admin_patch_to_a_taken_username_or_email_gets_409(
    client: httpx.AsyncClient,
    admin: Account,
    user: Account,
    other_user: Account,
    db: DatabaseProbe,
    changes: dict[str, str],
) -> None:
    before = await snapshot(db, user.id)

    response = await client.patch(
        user_url(user.id), json={**changes, "role": "admin"}, headers=admin.headers
    )

    assert_problem(response, 409, next(iter(changes)))
    assert await snapshot(db, user.id) == before


async def test_a_promoted_user_may_use_admin_routes_at_once(
    client: httpx.AsyncClient, admin: Account, user: Account, other_user: Account
) -> None:
    assert_problem(await client.get(USERS, headers=user.headers), 403)

    promoted = await client.patch(user_url(user.id), json={"role": "admin"}, headers=admin.headers)
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["role"] == "admin"

    # The token they already hold, issued while they were a normal user.
    listed = await client.get(USERS, headers=user.headers)
    assert listed.status_code == 200, listed.text
    assert listed.json()["total"] == 3
    read = await client.get(user_url(other_user.id), headers=user.headers)
    assert read.status_code == 200, read.text
    assert (await client.get(ME, headers=user.headers)).json()["role"] == "admin"


async def test_a_demoted_admin_loses_admin_routes_at_once(
    client: httpx.AsyncClient, admin: Account, user: Account
) -> None:
    await client.patch(user_url(user.id), json={"role": "admin"}, headers=admin.headers)
    assert (await client.get(USERS, headers=user.headers)).status_code == 200

    demoted = await client.patch(user_url(user.id), json={"role": "user"}, headers=admin.headers)
    assert demoted.status_code == 200, demoted.text

    assert_problem(await client.get(USERS, headers=user.headers), 403)
    assert (await client.get(ME, headers=user.headers)).status_code == 200


async def test_deactivating_a_user_ends_their_tokens_and_their_logins(
    client: httpx.AsyncClient, admin: Account, user: Account, db: DatabaseProbe
) -> None:
    response = await client.patch(
        user_url(user.id), json={"is_active": False}, headers=admin.headers
    )

    assert response.status_code == 200, response.text
    assert response.json()["is_active"] is False
    assert (await stored_user(db, user.id)).is_active is False
    await assert_locked_out(client, user)
    # The admin still sees the account.
    read = await client.get(user_url(user.id), headers=admin.headers)
    assert read.json()["is_active"] is False


async def test_a_reactivated_user_can_sign_in_again(
    client: httpx.AsyncClient, admin: Account, user: Account
) -> None:
    await client.patch(user_url(user.id), json={"is_active": False}, headers=admin.headers)

    response = await client.patch(
        user_url(user.id), json={"is_active": True}, headers=admin.headers
    )

    assert response.status_code == 200, response.text
    signed_in = await login(client, user.username, user.password)
    assert signed_in.status_code == 200, signed_in.text
    fresh = bearer(signed_in.json()["access_token"])
    assert (await client.get(ME, headers=fresh)).status_code == 200


async def test_a_deactivated_admin_loses_admin_routes(
    client: httpx.AsyncClient, admin: Account, user: Account
) -> None:
    await client.patch(user_url(user.id), json={"role": "admin"}, headers=admin.headers)
    response = await client.patch(
        user_url(admin.id), json={"is_active": False}, headers=user.headers
    )
    assert response.status_code == 200, response.text

    assert_unauthenticated(await client.get(USERS, headers=admin.headers))


async def test_admin_delete_removes_the_user_and_their_products(
    client: httpx.AsyncClient,
    admin: Account,
    user: Account,
    other_user: Account,
    db: DatabaseProbe,
) -> None:
    doomed = [await create_product(client, user, f"Alice {i}") for i in range(2)]
    kept = [
        await create_product(client, other_user, "Bob 0"),
        await create_product(client, admin, "Root 0"),
    ]

    response = await client.delete(user_url(user.id), headers=admin.headers)

    assert response.status_code == 204, response.text
    assert response.content == b""
    assert await db.get(User, user.id) is None
    assert list(await db.all(select(Product.id).where(Product.owner_id == user.id))) == []
    for product_id in doomed:
        assert await db.get(Product, product_id) is None
    remaining = await db.all(select(Product.id).order_by(Product.id))
    assert list(remaining) == sorted(kept)
    assert await db.get(User, other_user.id) is not None

    assert_problem(await client.get(user_url(user.id), headers=admin.headers), 404)
    assert_problem(await client.delete(user_url(user.id), headers=admin.headers), 404)
    assert_problem(
        await client.patch(user_url(user.id), json={"full_name": "x"}, headers=admin.headers), 404
    )


async def test_a_user_deleted_by_an_admin_loses_their_tokens(
    client: httpx.AsyncClient, admin: Account, user: Account
) -> None:
    assert (await client.delete(user_url(user.id), headers=admin.headers)).status_code == 204

    await assert_locked_out(client, user)


async def test_admin_routes_take_a_trailing_slash(
    client: httpx.AsyncClient, admin: Account, user: Account
) -> None:
    listed = await client.get(USERS + "/", headers=admin.headers)
    assert listed.status_code == 200, listed.text
    read = await client.get(user_url(user.id) + "/", headers=admin.headers)
    assert read.status_code == 200, read.text
    assert read.json()["id"] == user.id


# Check order (API.md, General): authentication (401), validation (422),
# existence (404), permission (403). The first check that fails answers.


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("GET", USERS + "?limit=0", None, id="list-bad-limit"),
        pytest.param("GET", USERS + "/abc", None, id="read-bad-id"),
        pytest.param("PATCH", USERS + "/abc", {"full_name": "x"}, id="patch-bad-id"),
        pytest.param("PATCH", USERS + "/1", {"role": "root"}, id="patch-bad-body"),
        pytest.param("PATCH", USERS + "/1", "not json", id="patch-not-json"),
        pytest.param("DELETE", USERS + "/-1", None, id="delete-bad-id"),
        pytest.param("PATCH", USERS + "/999999", {"is_active": "yes"}, id="patch-unknown-bad"),
    ],
)
async def test_authentication_is_checked_before_validation(
    client: httpx.AsyncClient, user: Account, method: str, path: str, body: object
) -> None:
    if body == "not json":
        response = await client.request(
            method, path, content=b"{nope", headers={"Content-Type": "application/json"}
        )
    else:
        response = await client.request(method, path, json=body)
    assert_unauthenticated(response)


@pytest.mark.parametrize(
    ("method", "path", "body", "location"),
    [
        pytest.param("GET", USERS + "?limit=101", None, ["query", "limit"], id="list-bad-limit"),
        pytest.param("GET", USERS + "/abc", None, ["path", "user_id"], id="read-bad-id"),
        pytest.param(
            "PATCH", USERS + "/abc", {"full_name": "x"}, ["path", "user_id"], id="patch-bad-id"
        ),
        pytest.param(
            "PATCH", USERS + "/{other}", {"role": "root"}, ["body", "role"], id="patch-bad-body"
        ),
        pytest.param("DELETE", USERS + "/0", None, ["path", "user_id"], id="delete-bad-id"),
    ],
)
async def test_for_a_normal_user_validation_answers_before_permission(
    client: httpx.AsyncClient,
    user: Account,
    other_user: Account,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    location: list[str],
) -> None:
    response = await client.request(
        method, path.format(other=other_user.id), json=body, headers=user.headers
    )
    assert_problem(response, 422)
    assert error_locations(response) == [location]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES_WITH_ID)
async def test_for_a_normal_user_existence_answers_before_permission(
    client: httpx.AsyncClient,
    user: Account,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    response = await client.request(
        method, path.format(id=999_999), json=body, headers=user.headers
    )
    assert_problem(response, 404, "999999")


async def test_for_an_admin_validation_answers_before_existence(
    client: httpx.AsyncClient, admin: Account
) -> None:
    response = await client.patch(user_url(999_999), json={"role": "root"}, headers=admin.headers)
    assert_problem(response, 422)
    assert error_locations(response) == [["body", "role"]]
