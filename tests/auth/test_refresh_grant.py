"""The token endpoint's refresh grant (API.md 1.1, RFC 6749 section 6).

`grant_type=refresh_token&refresh_token=...` on POST /api/v1/auth/token, as
standard OAuth2 clients send it to refresh by themselves: every rule of
/auth/refresh (rotation, reuse detection), with RFC 6749's answer, 400
invalid_grant, for a token that is not valid. /auth/refresh is unchanged
(tests/auth/test_refresh.py).
"""

from typing import Any

import httpx
import pytest

from tests.auth.helpers import ME_URL, TOKEN_URL
from tests.auth.test_token import assert_oauth2_error, assert_token_pair
from tests.support import Account, bearer, login, refresh


async def refresh_grant(client: httpx.AsyncClient, token: str, **extra: str) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": token, **extra}
    return await client.post(TOKEN_URL, data=form)


async def test_a_refresh_token_gets_a_new_pair_and_is_retired(
    client: httpx.AsyncClient, user: Account
) -> None:
    new = assert_token_pair(await refresh_grant(client, user.refresh_token))

    assert new["refresh_token"] != user.refresh_token
    me = await client.get(ME_URL, headers=bearer(new["access_token"]))
    assert me.json()["id"] == user.id
    # The pair rotates again through either route.
    assert_token_pair(await refresh_grant(client, new["refresh_token"]))


async def test_a_retired_token_revokes_the_whole_login(
    client: httpx.AsyncClient, user: Account
) -> None:
    new = assert_token_pair(await refresh_grant(client, user.refresh_token))

    reused = await refresh_grant(client, user.refresh_token)

    assert_oauth2_error(reused, "invalid_grant")
    assert "www-authenticate" not in reused.headers
    # The token issued by the first refresh went with its login.
    assert_oauth2_error(await refresh_grant(client, new["refresh_token"]), "invalid_grant")
    assert (await refresh(client, new["refresh_token"])).status_code == 401


async def test_the_two_refresh_routes_share_one_rotation(
    client: httpx.AsyncClient, user: Account
) -> None:
    via_json = await refresh(client, user.refresh_token)
    assert via_json.status_code == 200

    assert_oauth2_error(await refresh_grant(client, user.refresh_token), "invalid_grant")
    assert_oauth2_error(
        await refresh_grant(client, via_json.json()["refresh_token"]), "invalid_grant"
    )


@pytest.mark.parametrize("kind", ["garbage", "access token", "after a password change"])
async def test_a_token_that_is_not_valid_gets_invalid_grant(
    client: httpx.AsyncClient, user: Account, kind: str
) -> None:
    token = {"garbage": "not-a-token", "access token": user.access_token}.get(
        kind, user.refresh_token
    )
    if kind == "after a password change":
        changed = await client.post(
            "/api/v1/users/me/password",
            json={"current_password": user.password, "new_password": "a new passphrase"},
            headers=user.headers,
        )
        assert changed.status_code == 204

    response = await refresh_grant(client, token)

    body = assert_oauth2_error(response, "invalid_grant")
    assert response.headers["cache-control"] == "no-store"
    assert body["error_description"] == body["detail"]


@pytest.mark.parametrize(
    "form",
    [
        {"grant_type": "refresh_token"},
        {"grant_type": "refresh_token", "refresh_token": ""},
        {"grant_type": "refresh_token", "refresh_token": "x" * 5000},
        {"grant_type": "refresh_token", "refresh_token": "a\nb"},
    ],
    ids=["missing", "empty", "too long", "two lines"],
)
async def test_a_malformed_refresh_form_is_invalid_request(
    client: httpx.AsyncClient, form: dict[str, Any]
) -> None:
    body = assert_oauth2_error(await client.post(TOKEN_URL, data=form), "invalid_request")
    assert "refresh_token" in body["detail"]


async def test_a_password_grant_still_needs_its_fields(client: httpx.AsyncClient) -> None:
    for form, missing in (
        ({}, "password, username"),
        ({"grant_type": "password", "username": "alice"}, "password"),
        ({"password": "x"}, "username"),
    ):
        body = assert_oauth2_error(await client.post(TOKEN_URL, data=form), "invalid_request")
        assert body["detail"].endswith(f"{missing}."), body["detail"]


async def test_the_refresh_grant_ignores_a_username_and_password(
    client: httpx.AsyncClient, user: Account
) -> None:
    response = await refresh_grant(client, user.refresh_token, username="mallory", password="x")
    assert_token_pair(response)
    signed_in = await login(client, user.username, user.password)
    assert signed_in.status_code == 200
