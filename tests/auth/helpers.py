"""Shared by the auth tests: hand-made JWTs, account changes, problem comparisons."""

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from jose import jwt

from app.auth.models import RefreshFamily
from tests.conftest import TEST_SECRET_KEY
from tests.support import Account, DatabaseProbe

TOKEN_URL = "/api/v1/auth/token"
REFRESH_URL = "/api/v1/auth/refresh"
LOGOUT_URL = "/api/v1/auth/logout"
ME_URL = "/api/v1/users/me"

OTHER_KEY = "a-different-secret-key-that-nobody-here-signs-with-0123456789"


def claims_of(token: str) -> dict[str, Any]:
    """The payload of a token, read without checking anything."""
    return dict(jwt.get_unverified_claims(token))


def header_of(token: str) -> dict[str, Any]:
    return dict(jwt.get_unverified_header(token))


def sign(
    claims: dict[str, Any],
    *,
    typ: str = "at+jwt",
    key: str = TEST_SECRET_KEY,
    algorithm: str = "HS256",
) -> str:
    return jwt.encode(claims, key, algorithm=algorithm, headers={"typ": typ})


def resign(
    token: str,
    *,
    drop: tuple[str, ...] = (),
    key: str = TEST_SECRET_KEY,
    algorithm: str = "HS256",
    typ: str | None = None,
    **changes: Any,
) -> str:
    """A copy of `token` with some claims changed or dropped, signed again as asked."""
    claims = claims_of(token) | changes
    for name in drop:
        claims.pop(name, None)
    return sign(claims, typ=typ or header_of(token)["typ"], key=key, algorithm=algorithm)


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unsigned(token: str, *, alg: str = "none", keep_signature: bool = False) -> str:
    """`token` with its header rewritten to an unsigned `alg`, built by hand."""
    header = header_of(token) | {"alg": alg}
    signature = token.rsplit(".", 1)[1] if keep_signature else ""
    return f"{_b64(header)}.{_b64(claims_of(token))}.{signature}"


def new_jti() -> str:
    return uuid.uuid4().hex


def past(**delta: float) -> int:
    """A moment `delta` ago (timedelta's keywords), as a JWT time."""
    return int((datetime.now(UTC) - timedelta(**delta)).timestamp())


async def family_of(db: DatabaseProbe, refresh_token: str) -> RefreshFamily:
    """The stored refresh-token family `refresh_token` belongs to."""
    family = await db.get(RefreshFamily, claims_of(refresh_token)["fam"])
    assert family is not None
    return family


async def deactivate(client: httpx.AsyncClient, admin: Account, user_id: int) -> None:
    response = await client.patch(
        f"/api/v1/users/{user_id}", json={"is_active": False}, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["is_active"] is False


async def change_password(client: httpx.AsyncClient, account: Account, new_password: str) -> None:
    response = await client.post(
        f"{ME_URL}/password",
        json={"current_password": account.password, "new_password": new_password},
        headers=account.headers,
    )
    assert response.status_code == 204, response.text


def without_request(body: dict[str, Any]) -> dict[str, Any]:
    """A problem body without what differs on every request."""
    return {k: v for k, v in body.items() if k not in ("request_id", "instance")}
