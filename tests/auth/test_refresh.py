"""POST /api/v1/auth/refresh: rotation, reuse detection and refusal of bad refresh tokens.

Covers API.md's rules that each refresh returns a new pair and retires the
old refresh token, that a retired token coming back revokes its whole family
(401), that anything but a live refresh token this service issued gets 401
with `WWW-Authenticate: Bearer`, that the body is validated (422), and that a
password change or deactivation ends every refresh token issued before it.
"""

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.auth.models import RefreshFamily, RefreshToken
from tests.auth.helpers import (
    ME_URL,
    OTHER_KEY,
    REFRESH_URL,
    change_password,
    claims_of,
    deactivate,
    family_of,
    header_of,
    past,
    resign,
    unsigned,
)
from tests.support import (
    Account,
    DatabaseProbe,
    assert_problem,
    assert_unauthenticated,
    bearer,
    error_locations,
    refresh,
    tokens_for,
)


def assert_unauthorized(response: httpx.Response) -> None:
    body = assert_unauthenticated(response)
    assert "access_token" not in body


def assert_new_pair(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 15 * 60
    return body


async def test_refresh_returns_a_new_working_pair(client: httpx.AsyncClient, user: Account) -> None:
    body = assert_new_pair(await refresh(client, user.refresh_token))

    assert body["refresh_token"] != user.refresh_token
    assert body["access_token"] != user.access_token
    me = await client.get(ME_URL, headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.json()["id"] == user.id
    # The new refresh token works in its turn.
    assert_new_pair(await refresh(client, body["refresh_token"]))


async def test_rotation_retires_the_old_token_and_stays_in_the_same_family(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    body = assert_new_pair(await refresh(client, user.refresh_token))

    old = await db.get(RefreshToken, claims_of(user.refresh_token)["jti"])
    new = await db.get(RefreshToken, claims_of(body["refresh_token"])["jti"])
    assert old is not None
    assert old.used_at is not None
    assert new is not None
    assert new.used_at is None
    assert new.family_id == old.family_id == claims_of(user.refresh_token)["fam"]
    family = await family_of(db, body["refresh_token"])
    assert family.revoked_at is None


async def test_reusing_a_retired_token_revokes_the_whole_family(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    first = assert_new_pair(await refresh(client, user.refresh_token))
    newest = assert_new_pair(await refresh(client, first["refresh_token"]))

    assert_unauthorized(await refresh(client, user.refresh_token))

    family = await family_of(db, user.refresh_token)
    assert family.revoked_at is not None
    # Every token of that login is now dead, the newest one included.
    assert_unauthorized(await refresh(client, newest["refresh_token"]))
    assert_unauthorized(await refresh(client, first["refresh_token"]))


async def test_reuse_leaves_the_users_other_logins_alone(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    other_login = await tokens_for(client, "alice", user.password)
    assert_new_pair(await refresh(client, user.refresh_token))

    assert_unauthorized(await refresh(client, user.refresh_token))

    assert (await family_of(db, other_login["refresh_token"])).revoked_at is None
    assert_new_pair(await refresh(client, other_login["refresh_token"]))


@pytest.mark.parametrize("attempts", [2, 6])
@pytest.mark.concurrency
async def test_concurrent_refreshes_with_one_token_give_at_most_one_new_pair(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, attempts: int
) -> None:
    responses = await asyncio.gather(
        *(refresh(client, user.refresh_token) for _ in range(attempts))
    )

    succeeded = [r for r in responses if r.status_code == 200]
    assert len(succeeded) <= 1, [r.status_code for r in responses]
    for response in responses:
        if response.status_code != 200:
            assert_unauthorized(response)
    # However the race went, one family never holds two live successors.
    family_id = claims_of(user.refresh_token)["fam"]
    tokens = await db.all(select(RefreshToken).where(RefreshToken.family_id == family_id))
    assert len(tokens) == 1 + len(succeeded)


async def test_access_token_is_refused_as_a_refresh_token(
    client: httpx.AsyncClient, user: Account
) -> None:
    assert_unauthorized(await refresh(client, user.access_token))


async def test_access_token_relabelled_as_refresh_is_refused(
    client: httpx.AsyncClient, user: Account
) -> None:
    # Properly signed, typed rt+jwt and "refresh", but no family: never issued as one.
    forged = resign(user.access_token, typ="rt+jwt", type="refresh")
    assert_unauthorized(await refresh(client, forged))


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30.", "Bearer x", "ü" * 10, "." * 300],
)
async def test_garbage_is_refused(client: httpx.AsyncClient, user: Account, token: str) -> None:
    assert_unauthorized(await refresh(client, token))


async def test_token_signed_with_another_key_is_refused(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    forged = resign(user.refresh_token, key=OTHER_KEY)

    assert_unauthorized(await refresh(client, forged))

    # The genuine token was not touched by the attempt.
    stored = await db.get(RefreshToken, claims_of(user.refresh_token)["jti"])
    assert stored is not None
    assert stored.used_at is None
    assert_new_pair(await refresh(client, user.refresh_token))


async def test_unsigned_refresh_token_is_refused(client: httpx.AsyncClient, user: Account) -> None:
    assert_unauthorized(await refresh(client, unsigned(user.refresh_token)))


async def test_expired_refresh_token_is_refused(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    then = past(minutes=5)
    expired = resign(user.refresh_token, exp=then, iat=then - 60)
    assert header_of(expired)["typ"] == "rt+jwt"

    assert_unauthorized(await refresh(client, expired))

    stored = await db.get(RefreshToken, claims_of(user.refresh_token)["jti"])
    assert stored is not None
    assert stored.used_at is None


async def test_refresh_token_with_an_unknown_family_is_refused(
    client: httpx.AsyncClient, user: Account
) -> None:
    forged = resign(user.refresh_token, fam="0" * 32)
    assert_unauthorized(await refresh(client, forged))


async def test_refresh_token_of_another_users_family_is_refused(
    client: httpx.AsyncClient, user: Account, other_user: Account
) -> None:
    crossed = resign(user.refresh_token, fam=claims_of(other_user.refresh_token)["fam"])
    assert_unauthorized(await refresh(client, crossed))


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({}, ["body", "refresh_token"]),
        ({"refresh_token": None}, ["body", "refresh_token"]),
        ({"refresh_token": 12345}, ["body", "refresh_token"]),
        ({"refresh_token": ""}, ["body", "refresh_token"]),
        ({"refresh_token": "x", "access_token": "y"}, ["body", "access_token"]),
        ({"token": "x"}, ["body", "token"]),
    ],
    ids=["missing", "null", "number", "empty", "extra-field", "wrong-name"],
)
async def test_invalid_body_gets_422(
    client: httpx.AsyncClient, body: dict[str, Any], location: list[str]
) -> None:
    response = await client.post(REFRESH_URL, json=body)
    problem = assert_problem(response, 422)
    assert location in error_locations(response), problem


async def test_body_that_is_not_json_gets_422(client: httpx.AsyncClient, user: Account) -> None:
    response = await client.post(
        REFRESH_URL,
        content=f"refresh_token={user.refresh_token}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_problem(response, 422)


async def test_refresh_after_a_password_change_is_refused(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    await change_password(client, user, "a brand new passphrase")

    assert_unauthorized(await refresh(client, user.refresh_token))
    assert (await family_of(db, user.refresh_token)).revoked_at is not None
    # Signing in with the new password starts a login that refreshes fine.
    fresh = await tokens_for(client, "alice", "a brand new passphrase")
    assert_new_pair(await refresh(client, fresh["refresh_token"]))


async def test_refresh_after_deactivation_is_refused(
    client: httpx.AsyncClient, user: Account, admin: Account
) -> None:
    await deactivate(client, admin, user.id)
    assert_unauthorized(await refresh(client, user.refresh_token))


async def test_refresh_of_a_deleted_user_is_refused(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    response = await client.delete(ME_URL, headers=user.headers)
    assert response.status_code == 204

    assert_unauthorized(await refresh(client, user.refresh_token))
    assert await db.get(RefreshFamily, claims_of(user.refresh_token)["fam"]) is None
