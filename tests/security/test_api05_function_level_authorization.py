"""OWASP API5:2023 Broken Function Level Authorization, applied to this service.

The admin functions are the user-administration routes: everything under
`/api/v1/users` except registration (`POST /api/v1/users`) and the caller's
own account (`/api/v1/users/me...`). The threat is a normal user (or no
user at all) calling them, by guessing the URL, changing the method, adding
a trailing slash or a method-override header, or keeping a token from a
time they were admin. The defence: every admin operation needs a bearer
token (401 without one) and the service checks the caller's role, read
from the database on each request (never from the token), before doing
anything (403, nothing changed).

The admin routes are read from `app.openapi()`, so one added later is
covered by these tests without editing them; only a route that needs a
particular body must add it to `BODIES`.
"""

from typing import Any

import httpx
from fastapi import FastAPI

from app.users.models import User
from tests.auth.helpers import claims_of
from tests.security.common import Operation, operations, snapshot
from tests.support import Account, DatabaseProbe, assert_problem, create_account

USERS = "/api/v1/users"
# A valid body for an admin operation that needs one (an empty object otherwise),
# so that validation (422) cannot answer before the permission check.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PATCH", "/api/v1/users/{user_id}"): {"role": "admin", "is_active": False},
}


def admin_operations(app: FastAPI) -> list[Operation]:
    """Every operation under /api/v1/users that is not registration or the caller's own account."""
    found = [
        op
        for op in operations(app)
        if (op.path == USERS or op.path.startswith(USERS + "/"))
        and op.key != ("POST", USERS)
        and not (op.path == f"{USERS}/me" or op.path.startswith(f"{USERS}/me/"))
    ]
    # Deletions last, so that the other operations find their target when the admin calls them.
    return sorted(found, key=lambda op: op.method == "DELETE")


async def send(
    client: httpx.AsyncClient,
    op: Operation,
    target: int,
    headers: dict[str, str] | None = None,
    suffix: str = "",
) -> httpx.Response:
    body = BODIES.get(op.key, {}) if "requestBody" in op.spec else None
    return await client.request(op.method, op.url(target) + suffix, json=body, headers=headers)


async def test_the_admin_operations_are_the_ones_api_md_lists(app: FastAPI) -> None:
    found = {op.key for op in admin_operations(app)}
    # API.md's table; a new admin route is still covered by the tests below.
    assert found >= {
        ("GET", USERS),
        ("GET", f"{USERS}/{{user_id}}"),
        ("PATCH", f"{USERS}/{{user_id}}"),
        ("DELETE", f"{USERS}/{{user_id}}"),
    }
    for op in admin_operations(app):
        assert op.needs_token, op.key
        assert "403" in op.spec["responses"], op.key


async def test_without_a_token_every_admin_operation_gets_401(
    app: FastAPI, client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    before = await snapshot(db)
    for op in admin_operations(app):
        for suffix in ("", "/"):
            response = await send(client, op, user.id, suffix=suffix)
            assert_problem(response, 401)
            assert response.headers["www-authenticate"].startswith("Bearer"), op.key
    assert await snapshot(db) == before


async def test_a_normal_user_gets_403_on_every_admin_operation(
    app: FastAPI,
    client: httpx.AsyncClient,
    user: Account,
    other_user: Account,
    admin: Account,
    db: DatabaseProbe,
) -> None:
    """On another account, on their own, and on the admin's: 403 and nothing changes."""
    before = await snapshot(db)
    for op in admin_operations(app):
        for target in (other_user.id, user.id, admin.id):
            for suffix in ("", "/"):
                response = await send(client, op, target, user.headers, suffix)
                assert_problem(response, 403)
    assert await snapshot(db) == before


async def test_an_admin_may_use_every_admin_operation(
    app: FastAPI, client: httpx.AsyncClient, other_user: Account, admin: Account
) -> None:
    """So the 403s above come from the role check, not from a broken route."""
    for op in admin_operations(app):
        response = await send(client, op, other_user.id, admin.headers)
        assert response.status_code in (200, 204), (op.key, response.text)


async def test_the_role_is_read_from_the_database_not_the_token(
    client: httpx.AsyncClient, user: Account, admin: Account
) -> None:
    assert "role" not in claims_of(admin.access_token)
    promoted = await client.patch(
        f"{USERS}/{user.id}", json={"role": "admin"}, headers=admin.headers
    )
    assert promoted.status_code == 200

    # Alice's token, issued while she was a normal user, works as an admin's at once ...
    assert (await client.get(USERS, headers=user.headers)).status_code == 200

    demoted = await client.patch(f"{USERS}/{user.id}", json={"role": "user"}, headers=admin.headers)
    assert demoted.status_code == 200
    # ... and loses the power at once too.
    assert_problem(await client.get(USERS, headers=user.headers), 403)


async def test_a_normal_user_cannot_make_themselves_admin(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    attempts = [
        await client.patch(f"{USERS}/{user.id}", json={"role": "admin"}, headers=user.headers),
        await client.patch(f"{USERS}/me", json={"role": "admin"}, headers=user.headers),
    ]
    assert_problem(attempts[0], 403)
    assert_problem(attempts[1], 422)
    stored = await db.get(User, user.id)
    assert stored is not None
    assert str(stored.role) == "user"


async def test_method_override_headers_do_not_reach_admin_functions(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    victim = await create_account(client, "victim")
    before = await snapshot(db)
    for header in ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"):
        for method in ("POST", "GET"):
            response = await client.request(
                method,
                f"{USERS}/{victim.id}",
                headers={**user.headers, header: "DELETE"},
            )
            assert response.status_code in (403, 405), (header, method, response.status_code)
    assert await snapshot(db) == before


async def test_head_on_an_admin_route_is_refused_like_get(
    client: httpx.AsyncClient, user: Account
) -> None:
    anonymous = await client.head(USERS)
    normal = await client.head(USERS, headers=user.headers)
    assert anonymous.status_code == 401
    assert normal.status_code == 403
    assert normal.content == b""
