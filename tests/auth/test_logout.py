"""POST /api/v1/auth/logout: revoking a login's refresh-token family.

Covers API.md's rules that logout revokes the whole family and answers 204,
also for a token already revoked or expired (no oracle), and 401 only for
something that is not a refresh token this service issued: an access token,
a forgery or garbage.
"""

from datetime import datetime
from typing import Any

import httpx
import pytest

from app.auth.models import RefreshFamily
from tests.auth.helpers import (
    LOGOUT_URL,
    OTHER_KEY,
    claims_of,
    family_of,
    new_jti,
    past,
    resign,
    unsigned,
)
from tests.support import (
    Account,
    DatabaseProbe,
    assert_problem,
    assert_unauthenticated,
    error_locations,
    refresh,
    tokens_for,
)


async def logout(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post(LOGOUT_URL, json={"refresh_token": token})


def assert_no_content(response: httpx.Response) -> None:
    assert response.status_code == 204, response.text
    assert response.content == b""


async def revoked_at(db: DatabaseProbe, refresh_token: str) -> datetime | None:
    return (await family_of(db, refresh_token)).revoked_at


def expired_copy(refresh_token: str, **changes: Any) -> str:
    """The same token with a past expiry, correctly signed."""
    expired = past(days=1)
    return resign(refresh_token, exp=expired, iat=expired - 3600, **changes)


async def test_logout_revokes_the_family(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    assert await revoked_at(db, user.refresh_token) is None

    assert_no_content(await logout(client, user.refresh_token))

    assert await revoked_at(db, user.refresh_token) is not None
    assert_unauthenticated(await refresh(client, user.refresh_token))


async def test_logout_with_an_old_token_ends_the_newest_one_too(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    rotated = await refresh(client, user.refresh_token)
    assert rotated.status_code == 200
    newest = rotated.json()["refresh_token"]

    assert_no_content(await logout(client, newest))

    assert_unauthenticated(await refresh(client, newest))
    assert await revoked_at(db, user.refresh_token) is not None


async def test_logout_leaves_the_users_other_logins_alone(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    other_login = await tokens_for(client, "alice", user.password)

    assert_no_content(await logout(client, user.refresh_token))

    assert await revoked_at(db, other_login["refresh_token"]) is None
    assert (await refresh(client, other_login["refresh_token"])).status_code == 200


async def test_logout_twice_answers_204_both_times(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    assert_no_content(await logout(client, user.refresh_token))
    first_revocation = await revoked_at(db, user.refresh_token)

    assert_no_content(await logout(client, user.refresh_token))

    assert await revoked_at(db, user.refresh_token) == first_revocation


async def test_logout_with_a_token_revoked_by_reuse_answers_204(
    client: httpx.AsyncClient, user: Account
) -> None:
    assert (await refresh(client, user.refresh_token)).status_code == 200
    assert_unauthenticated(await refresh(client, user.refresh_token))  # reuse: family revoked

    assert_no_content(await logout(client, user.refresh_token))


async def test_logout_after_a_password_change_answers_204(
    client: httpx.AsyncClient, user: Account
) -> None:
    response = await client.post(
        "/api/v1/users/me/password",
        json={"current_password": user.password, "new_password": "another long passphrase"},
        headers=user.headers,
    )
    assert response.status_code == 204

    assert_no_content(await logout(client, user.refresh_token))


async def test_logout_with_an_expired_token_answers_204_and_revokes_its_family(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    assert_no_content(await logout(client, expired_copy(user.refresh_token)))

    assert await revoked_at(db, user.refresh_token) is not None
    assert_unauthenticated(await refresh(client, user.refresh_token))


async def test_logout_with_an_expired_token_of_a_forgotten_family_answers_204(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    # A login the service has since cleaned away: nothing left to revoke.
    token = expired_copy(user.refresh_token, fam="f" * 32, jti=new_jti())

    assert_no_content(await logout(client, token))

    assert await revoked_at(db, user.refresh_token) is None


async def test_logout_refuses_an_access_token(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    assert_unauthenticated(await logout(client, user.access_token))
    assert await revoked_at(db, user.refresh_token) is None


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30."])
async def test_logout_refuses_garbage(client: httpx.AsyncClient, token: str) -> None:
    assert_unauthenticated(await logout(client, token))


async def test_logout_refuses_a_token_signed_with_another_key(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    # A forgery naming a real family must not be able to revoke it.
    forged = resign(user.refresh_token, key=OTHER_KEY)

    assert_unauthenticated(await logout(client, forged))

    assert await revoked_at(db, user.refresh_token) is None
    assert (await refresh(client, user.refresh_token)).status_code == 200


async def test_logout_refuses_an_expired_forgery(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    forged = resign(user.refresh_token, key=OTHER_KEY, exp=past(days=1))

    assert_unauthenticated(await logout(client, forged))
    assert await revoked_at(db, user.refresh_token) is None


async def test_logout_refuses_an_unsigned_token(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    assert_unauthenticated(await logout(client, unsigned(user.refresh_token)))
    assert_unauthenticated(await logout(client, unsigned(user.refresh_token, keep_signature=True)))
    assert await revoked_at(db, user.refresh_token) is None


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({}, ["body", "refresh_token"]),
        ({"refresh_token": ""}, ["body", "refresh_token"]),
        ({"refresh_token": "x", "everywhere": True}, ["body", "everywhere"]),
    ],
    ids=["missing", "empty", "extra-field"],
)
async def test_logout_with_an_invalid_body_gets_422(
    client: httpx.AsyncClient, body: dict[str, Any], location: list[str]
) -> None:
    response = await client.post(LOGOUT_URL, json=body)
    assert_problem(response, 422)
    assert location in error_locations(response)


@pytest.mark.parametrize(
    "changes",
    [{"exp": None}, {"exp": "tomorrow"}, {"exp": 10**20}, {"exp": 2**62}, {"fam": None}],
    ids=["no-exp", "text-exp", "huge-exp", "int64-exp", "no-family"],
)
async def test_logout_refuses_a_token_this_service_would_never_issue(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, changes: dict[str, Any]
) -> None:
    drop = tuple(name for name, value in changes.items() if value is None)
    kept = {name: value for name, value in changes.items() if value is not None}
    token = resign(user.refresh_token, drop=drop, **kept)

    assert_unauthenticated(await logout(client, token))

    assert await revoked_at(db, user.refresh_token) is None


async def test_logout_with_the_token_of_a_deleted_user_answers_204(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    response = await client.delete("/api/v1/users/me", headers=user.headers)
    assert response.status_code == 204

    assert_no_content(await logout(client, user.refresh_token))

    assert await db.get(RefreshFamily, claims_of(user.refresh_token)["fam"]) is None
