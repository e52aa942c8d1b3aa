"""A stock OAuth2 client library keeps a session alive against the service by itself.

authlib's AsyncOAuth2Client is set up the way its documentation says for a
public client: nothing but the token endpoint's URL, no client secret, and an
`update_token` callback to save new tokens. No compliance hook, no custom
auth class, no retry on 401. It signs in with the password grant, and when
the access token is about to run out (judged from the `expires_in` the
service returns) it refreshes on its own, before sending an ordinary request,
with the refresh grant on the same token endpoint.

The app here issues one-minute access tokens (the shortest
ACCESS_TOKEN_EXPIRE_MINUTES allows) and the client refreshes 57 seconds
before a token ends, so a token counts as spent after about three seconds
instead of a minute. authlib refreshes ahead of the deadline, not after a
401, so the service would still have accepted the old access token: what the
test proves is that a standard client gets a lifetime it can act on, sends a
refresh it accepts, and takes the rotated pair it answers with.
"""

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from fastapi import FastAPI
from sqlalchemy import select

from app.auth.models import RefreshFamily, RefreshToken
from app.core.config import Settings
from tests.auth.helpers import ME_URL, TOKEN_URL, claims_of
from tests.auth.test_token import assert_oauth2_error
from tests.conftest import make_settings
from tests.support import Account, DatabaseProbe

BASE_URL = "http://testserver"
LIFETIME_SECONDS = 60  # ACCESS_TOKEN_EXPIRE_MINUTES=1, its minimum
LEEWAY_SECONDS = 57  # authlib refreshes this long before `expires_at`
# authlib stores expires_at = int(now) + expires_in, so a token is spent for it
# at most LIFETIME - LEEWAY seconds after sign-in; a little more to be sure.
WAIT_SECONDS = LIFETIME_SECONDS - LEEWAY_SECONDS + 0.5


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Every app in this module issues one-minute access tokens."""
    return make_settings(database_url, tmp_path / "data", access_token_expire_minutes=1)


class SavedTokens:
    """authlib's `update_token` callback: keeps what authlib asks the application to save."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, Any], str | None]] = []

    async def __call__(
        self,
        token: dict[str, Any],
        refresh_token: str | None = None,
        access_token: str | None = None,
    ) -> None:
        self.calls.append((dict(token), refresh_token))


class Wire:
    """What the OAuth2 client actually sent: method, path, form fields, Authorization."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> None:
        self.requests.append(request)

    def summary(self) -> list[tuple[str, str, str | None]]:
        """(method, path, grant_type of a token request)."""
        return [
            (request.method, request.url.path, form_of(request).get("grant_type"))
            for request in self.requests
        ]


def form_of(request: httpx.Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("application/x-www-form-urlencoded"):
        return {}
    return dict(httpx.QueryParams(request.content.decode()))


@pytest.fixture
async def oauth(app: FastAPI) -> AsyncIterator[tuple[AsyncOAuth2Client, SavedTokens, Wire]]:
    """authlib's client on the app, in process, as a public client would configure it."""
    saved, wire = SavedTokens(), Wire()
    async with AsyncOAuth2Client(
        token_endpoint=f"{BASE_URL}{TOKEN_URL}",
        update_token=saved,
        leeway=LEEWAY_SECONDS,
        transport=httpx.ASGITransport(app=app),
        base_url=BASE_URL,
        event_hooks={"request": [wire]},
    ) as client:
        yield client, saved, wire


async def test_authlib_signs_in_and_refreshes_an_expired_token_by_itself(
    oauth: tuple[AsyncOAuth2Client, SavedTokens, Wire],
    client: httpx.AsyncClient,
    user: Account,
    db: DatabaseProbe,
) -> None:
    session, saved, wire = oauth

    first = dict(await session.fetch_token(username=user.email, password=user.password))
    assert first["token_type"] == "bearer"
    assert first["expires_in"] == LIFETIME_SECONDS
    assert first["expires_at"] - time.time() > LEEWAY_SECONDS  # fresh for authlib, for now

    me = await session.get(ME_URL)
    assert me.status_code == 200, me.text
    assert me.json()["id"] == user.id
    assert saved.calls == []  # a fresh token is not refreshed

    await asyncio.sleep(WAIT_SECONDS)
    assert session.token.is_expired(leeway=LEEWAY_SECONDS)

    me = await session.get(ME_URL)  # an ordinary call: authlib refreshes first

    assert me.status_code == 200, me.text
    assert me.json()["id"] == user.id
    # authlib asked the application to save one new pair, rotated by the service.
    assert len(saved.calls) == 1
    new, retired = saved.calls[0]
    assert retired == first["refresh_token"]
    assert new["access_token"] != first["access_token"]
    assert new["refresh_token"] != first["refresh_token"]
    assert new["token_type"] == "bearer"
    assert new["expires_in"] == LIFETIME_SECONDS
    assert claims_of(new["refresh_token"])["fam"] == claims_of(first["refresh_token"])["fam"]
    assert not session.token.is_expired(leeway=LEEWAY_SECONDS)

    # On the wire: sign-in, a call, the refresh grant on the token endpoint, the call.
    assert wire.summary() == [
        ("POST", TOKEN_URL, "password"),
        ("GET", ME_URL, None),
        ("POST", TOKEN_URL, "refresh_token"),
        ("GET", ME_URL, None),
    ]
    refresh_form = form_of(wire.requests[2])
    assert refresh_form["refresh_token"] == first["refresh_token"]
    assert "authorization" not in wire.requests[2].headers  # a public client: no secret
    assert wire.requests[1].headers["authorization"] == f"Bearer {first['access_token']}"
    assert wire.requests[3].headers["authorization"] == f"Bearer {new['access_token']}"

    # The service retired the old refresh token and kept the login.
    old_jti = claims_of(first["refresh_token"])["jti"]
    stored = await db.scalar(select(RefreshToken).where(RefreshToken.jti == old_jti))
    assert stored is not None
    assert stored.used_at is not None
    family = await db.get(RefreshFamily, claims_of(first["refresh_token"])["fam"])
    assert family is not None
    assert family.revoked_at is None

    # Last, as it ends the login: the old refresh token is refused as RFC 6749 says.
    reused = await client.post(
        TOKEN_URL, data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    )
    assert_oauth2_error(reused, "invalid_grant")


async def test_authlib_reads_a_wrong_password_as_invalid_grant(
    oauth: tuple[AsyncOAuth2Client, SavedTokens, Wire], user: Account
) -> None:
    session, saved, _ = oauth

    with pytest.raises(OAuthError) as raised:
        await session.fetch_token(username=user.email, password="not the password")

    assert raised.value.error == "invalid_grant"
    assert raised.value.description == "Incorrect username or password."
    assert not session.token
    assert saved.calls == []
