"""Your own account, /api/v1/users/me: read it, change it, delete it.

Covers the Users section of API.md on GET, PATCH and DELETE /users/me:
only a signed-in user; PATCH changes only the fields sent (`email`,
`full_name`, `username`), refuses anything else and keeps uniqueness
without regard to case; DELETE takes the user's products with it and ends
their tokens.
"""

import httpx
import pytest
from sqlalchemy import select

from app.products.models import Product
from app.users.models import User
from tests.support import (
    Account,
    DatabaseProbe,
    assert_problem,
    assert_unauthenticated,
    bearer,
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
)


async def product_ids_of(db: DatabaseProbe, owner_id: int) -> list[int]:
    return list(await db.all(select(Product.id).where(Product.owner_id == owner_id)))


async def test_me_returns_your_own_user(client: httpx.AsyncClient, user: Account) -> None:
    response = await client.get(ME, headers=user.headers)

    assert response.status_code == 200, response.text
    body = assert_user_body(response.json())
    assert body["id"] == user.id
    assert body["username"] == "alice"
    assert body["email"] == "alice@example.com"
    assert body["full_name"] is None
    assert body["role"] == "user"
    assert body["is_active"] is True


async def test_me_answers_each_user_with_their_own_account(
    client: httpx.AsyncClient, user: Account, other_user: Account
) -> None:
    mine = (await client.get(ME, headers=user.headers)).json()
    theirs = (await client.get(ME, headers=other_user.headers)).json()
    assert (mine["id"], mine["username"]) == (user.id, "alice")
    assert (theirs["id"], theirs["username"]) == (other_user.id, "bob")


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-header"),
        pytest.param({"Authorization": "Bearer"}, id="empty-bearer"),
        pytest.param({"Authorization": "Bearer not.a.jwt"}, id="garbage"),
        pytest.param({"Authorization": "Basic YWxpY2U6cGFzc3dvcmQ="}, id="basic-scheme"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_me_without_a_valid_token_gets_401(
    client: httpx.AsyncClient,
    user: Account,
    db: DatabaseProbe,
    method: str,
    headers: dict[str, str],
) -> None:
    body = {"full_name": "Mallory"} if method == "PATCH" else None
    response = await client.request(method, ME, json=body, headers=headers)

    assert_unauthenticated(response)
    stored = await stored_user(db, user.id)
    assert stored.full_name is None


async def test_a_refresh_token_is_not_an_access_token(
    client: httpx.AsyncClient, user: Account
) -> None:
    response = await client.get(ME, headers=bearer(user.refresh_token))
    assert_unauthenticated(response)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param(
            {"full_name": "Alice Liddell"},
            {"username": "alice", "email": "alice@example.com", "full_name": "Alice Liddell"},
            id="full_name",
        ),
        pytest.param(
            {"email": "alice@wonderland.example"},
            {"username": "alice", "email": "alice@wonderland.example", "full_name": None},
            id="email",
        ),
        pytest.param(
            {"username": "alice_l"},
            {"username": "alice_l", "email": "alice@example.com", "full_name": None},
            id="username",
        ),
        pytest.param(
            {"username": "al.ice", "email": "al@example.org", "full_name": "Al"},
            {"username": "al.ice", "email": "al@example.org", "full_name": "Al"},
            id="all-three",
        ),
        pytest.param(
            {},
            {"username": "alice", "email": "alice@example.com", "full_name": None},
            id="nothing",
        ),
    ],
)
async def test_patch_me_changes_only_the_fields_sent(
    client: httpx.AsyncClient,
    user: Account,
    db: DatabaseProbe,
    changes: dict[str, str],
    expected: dict[str, str | None],
) -> None:
    before = await stored_user(db, user.id)
    response = await client.patch(ME, json=changes, headers=user.headers)

    assert response.status_code == 200, response.text
    body = assert_user_body(response.json())
    assert {k: body[k] for k in expected} == expected
    assert (body["id"], body["role"], body["is_active"]) == (user.id, "user", True)
    assert assert_utc_time(body["created_at"]) == before.created_at
    stored = await stored_user(db, user.id)
    assert {k: getattr(stored, k) for k in expected} == expected
    assert stored.password_hash == before.password_hash
    assert stored.role == "user"
    assert stored.is_active is True


async def test_patch_me_moves_updated_at_forward(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    before = await stored_user(db, user.id)
    response = await client.patch(ME, json={"full_name": "Alice"}, headers=user.headers)
    assert assert_utc_time(response.json()["updated_at"]) >= before.updated_at
    assert (await stored_user(db, user.id)).updated_at >= before.updated_at


async def test_full_name_null_clears_it(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    await client.patch(ME, json={"full_name": "Alice Liddell"}, headers=user.headers)

    response = await client.patch(ME, json={"full_name": None}, headers=user.headers)

    assert response.status_code == 200, response.text
    assert response.json()["full_name"] is None
    stored = await stored_user(db, user.id)
    assert stored.full_name is None
    assert (stored.username, stored.email) == ("alice", "alice@example.com")


async def test_after_a_username_change_you_sign_in_with_the_new_one(
    client: httpx.AsyncClient, user: Account
) -> None:
    await client.patch(ME, json={"username": "alice2"}, headers=user.headers)

    assert (await login(client, "alice2", user.password)).status_code == 200
    old = await login(client, "alice", user.password)
    assert assert_problem(old, 400)["error"] == "invalid_grant"
    # The change is not a password change: the token in hand still works.
    assert (await client.get(ME, headers=user.headers)).status_code == 200


async def test_you_may_change_the_case_of_your_own_username_and_email(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    response = await client.patch(
        ME, json={"username": "Alice", "email": "Alice@example.com"}, headers=user.headers
    )

    assert response.status_code == 200, response.text
    stored = await stored_user(db, user.id)
    assert (stored.username, stored.email) == ("Alice", "Alice@example.com")


@pytest.mark.parametrize("field", ["username", "email"])
async def test_username_or_email_null_gets_422(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, field: str
) -> None:
    response = await client.patch(ME, json={field: None}, headers=user.headers)

    assert_problem(response, 422)
    assert error_locations(response) == [["body", field]]
    stored = await stored_user(db, user.id)
    assert (stored.username, stored.email) == ("alice", "alice@example.com")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("role", "admin"),
        ("is_active", False),
        ("id", 99),
        ("password", "a brand new password"),
        ("password_hash", "$argon2id$v=19$m=64,t=1,p=1$abc$def"),
        ("created_at", "2020-01-01T00:00:00Z"),
        ("updated_at", "2020-01-01T00:00:00Z"),
        ("token_version", 5),
    ],
)
async def test_patch_me_refuses_unknown_fields_and_changes_nothing(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, field: str, value: object
) -> None:
    before = await stored_user(db, user.id)
    response = await client.patch(
        ME, json={"full_name": "Alice", field: value}, headers=user.headers
    )

    assert_problem(response, 422)
    assert error_locations(response) == [["body", field]]
    after = await stored_user(db, user.id)
    for column in (
        "username",
        "email",
        "full_name",
        "role",
        "is_active",
        "email_verified",
        "password_hash",
        "token_version",
        "updated_at",
    ):
        assert getattr(after, column) == getattr(before, column), column
    assert (await client.get(ME, headers=user.headers)).status_code == 200


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("username", "al"),
        ("username", "a" * 51),
        ("username", "alice smith"),
        ("username", "alice\u0000"),
        ("email", "not-an-email"),
        ("full_name", "f" * 201),
        ("full_name", "Alice\u0000"),
    ],
)
async def test_patch_me_validates_values_like_registration(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, field: str, value: str
) -> None:
    response = await client.patch(ME, json={field: value}, headers=user.headers)

    assert_problem(response, 422)
    assert error_locations(response) == [["body", field]]
    stored = await stored_user(db, user.id)
    assert (stored.username, stored.email, stored.full_name) == (
        "alice",
        "alice@example.com",
        None,
    )


async def test_patch_me_with_a_body_that_is_not_json_gets_422(
    client: httpx.AsyncClient, user: Account
) -> None:
    response = await client.patch(
        ME,
        content=b"{full_name: Alice}",
        headers={**user.headers, "Content-Type": "application/json"},
    )
    assert_problem(response, 422)
    assert error_locations(response) == [["body"]]


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"username": "bob"}, id="username"),
        pytest.param({"username": "BoB"}, id="username-other-case"),
        pytest.param({"email": "bob@example.com"}, id="email"),
        pytest.param({"email": "BOB@Example.COM"}, id="email-other-case"),
    ],
)
async def test_changing_to_a_taken_username_or_email_gets_409(
    client: httpx.AsyncClient,
    user: Account,
    other_user: Account,
    db: DatabaseProbe,
    changes: dict[str, str],
) -> None:
    response = await client.patch(
        ME, json={**changes, "full_name": "Should Not Stick"}, headers=user.headers
    )

    assert_problem(response, 409, next(iter(changes)))
    stored = await stored_user(db, user.id)
    assert (stored.username, stored.email, stored.full_name) == (
        "alice",
        "alice@example.com",
        None,
    )
    theirs = await stored_user(db, other_user.id)
    assert (theirs.username, theirs.email) == ("bob", "bob@example.com")


async def test_no_token_and_a_bad_body_gets_401_first(client: httpx.AsyncClient) -> None:
    response = await client.patch(ME, json={"role": "admin", "username": None})
    assert_unauthenticated(response)

    not_json = await client.patch(
        ME, content=b"{oops", headers={"Content-Type": "application/json"}
    )
    assert_unauthenticated(not_json)


async def test_delete_me_removes_you_and_your_products_only(
    client: httpx.AsyncClient, user: Account, other_user: Account, db: DatabaseProbe
) -> None:
    mine = [await create_product(client, user, f"Mine {i}") for i in range(3)]
    theirs = [await create_product(client, other_user, f"Theirs {i}") for i in range(2)]
    assert sorted(await product_ids_of(db, user.id)) == sorted(mine)

    response = await client.delete(ME, headers=user.headers)

    assert response.status_code == 204, response.text
    assert response.content == b""
    assert await db.get(User, user.id) is None
    assert await product_ids_of(db, user.id) == []
    for product_id in mine:
        assert await db.get(Product, product_id) is None
        gone = await client.get(f"/api/v1/products/{product_id}")
        assert_problem(gone, 404)
    assert sorted(await product_ids_of(db, other_user.id)) == sorted(theirs)
    assert await db.get(User, other_user.id) is not None
    assert (await client.get(ME, headers=other_user.headers)).status_code == 200


async def test_after_delete_me_your_tokens_and_password_stop_working(
    client: httpx.AsyncClient, user: Account
) -> None:
    assert (await client.delete(ME, headers=user.headers)).status_code == 204

    assert_unauthenticated(await client.delete(ME, headers=user.headers))
    await assert_locked_out(client, user)


async def test_after_delete_me_the_name_and_email_can_be_registered_again(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    assert (await client.delete(ME, headers=user.headers)).status_code == 204

    response = await client.post(
        "/api/v1/users",
        json={"username": "ALICE", "email": "alice@example.com", "password": "another password"},
    )
    assert response.status_code == 201, response.text
    assert [u.username for u in await db.all(select(User))] == ["ALICE"]


async def test_a_deleted_users_token_never_signs_in_a_later_user(
    client: httpx.AsyncClient, user: Account
) -> None:
    assert (await client.delete(ME, headers=user.headers)).status_code == 204
    newcomer = await client.post(
        "/api/v1/users",
        json={"username": "carol", "email": "carol@example.com", "password": "carols password"},
    )
    assert newcomer.status_code == 201, newcomer.text

    stale = await client.get(ME, headers=user.headers)
    assert stale.status_code == 401, f"the deleted user's token reads {stale.json()}"
    assert_unauthenticated(stale)
    assert newcomer.json()["id"] != user.id
