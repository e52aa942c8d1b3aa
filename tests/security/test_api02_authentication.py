"""OWASP API2:2023 Broken Authentication, applied to this service.

Clients sign in at `POST /api/v1/auth/token` (username or email, and
password) and get a short-lived HS256 access token and a rotating refresh
token; every protected route reads the access token from the
`Authorization: Bearer` header and from nowhere else. The threats: tokens
that are forged, altered, expired, of the wrong kind or meant for another
issuer or audience; password guessing; learning which accounts exist from
the login's answers; a stolen refresh token used for ever; a session that
outlives logout, a password change or the account itself.

The defences shown here: the decoder pins HS256, requires the standard
claims and checks issuer, audience, expiry and the token type (in the `typ`
header and a claim), and each access token is checked against the user's
current state (active, token version); logins are throttled per account and
answer wrong password, unknown name and inactive account identically;
refresh tokens rotate and are revoked by logout and by a password change.
tests/auth goes through every rule in detail; this module is the short,
self-contained evidence.
"""

from collections.abc import Callable

import httpx
from fastapi import FastAPI

from tests.auth.helpers import OTHER_KEY, claims_of, resign, unsigned
from tests.security.common import operations
from tests.support import Account, assert_problem, bearer, login, refresh

ME = "/api/v1/users/me"
ACCESS_LIFETIME_SECONDS = 15 * 60  # ACCESS_TOKEN_EXPIRE_MINUTES' default

# Public by API.md; every other operation needs a bearer token.
PUBLIC_OPERATIONS = {
    ("POST", "/api/v1/auth/token"),
    ("POST", "/api/v1/auth/refresh"),
    ("POST", "/api/v1/auth/logout"),
    ("POST", "/api/v1/auth/verify-email"),
    ("POST", "/api/v1/auth/password-reset"),
    ("POST", "/api/v1/auth/password-reset/confirm"),
    ("POST", "/api/v1/users"),
    ("GET", "/api/v1/products"),
    ("GET", "/api/v1/products/events"),
    ("GET", "/api/v1/products/{product_id}"),
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
    ("GET", "/metrics"),
}

BadToken = Callable[[Account, Account], str]

# Ways an access token can be wrong. Each gets a 401, for a user who exists.
BAD_TOKENS: dict[str, BadToken] = {
    "expired": lambda me, _: resign(me.access_token, exp=claims_of(me.access_token)["iat"] - 1),
    "signed with another key": lambda me, _: resign(me.access_token, key=OTHER_KEY),
    "alg none": lambda me, _: unsigned(me.access_token),
    "alg none with the old signature": lambda me, _: unsigned(me.access_token, keep_signature=True),
    "HS512 with the right key": lambda me, _: resign(me.access_token, algorithm="HS512"),
    "refresh token as access token": lambda me, _: me.refresh_token,
    "refresh typ header": lambda me, _: resign(me.access_token, typ="rt+jwt"),
    "refresh type claim": lambda me, _: resign(me.access_token, type="refresh"),
    "wrong audience": lambda me, _: resign(me.access_token, aud="another-api"),
    "wrong issuer": lambda me, _: resign(me.access_token, iss="https://issuer.example"),
    "without exp": lambda me, _: resign(me.access_token, drop=("exp",)),
    "without sub": lambda me, _: resign(me.access_token, drop=("sub",)),
    "without jti": lambda me, _: resign(me.access_token, drop=("jti",)),
    "another user's id, forged": lambda me, other: resign(
        me.access_token, key=OTHER_KEY, sub=str(other.id)
    ),
    "another user's id, payload swapped": lambda me, other: (
        me.access_token.split(".")[0]
        + "."
        + other.access_token.split(".")[1]
        + "."
        + me.access_token.split(".")[2]
    ),
    "stale token version": lambda me, _: resign(me.access_token, ver=0),
    "not a JWT": lambda me, _: "not-a-token",
}


async def test_a_bad_access_token_gets_401(
    client: httpx.AsyncClient, user: Account, other_user: Account
) -> None:
    for kind, make in BAD_TOKENS.items():
        response = await client.get(ME, headers=bearer(make(user, other_user)))
        assert response.status_code == 401, kind
        assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer"), kind
    assert (await client.get(ME, headers=user.headers)).status_code == 200  # the real one works


async def test_exactly_the_public_operations_work_without_a_token(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    public = [op for op in operations(app) if not op.needs_token]
    assert {op.key for op in public} == PUBLIC_OPERATIONS
    for op in public:
        body = {} if "requestBody" in op.spec else None
        response = await client.request(op.method, op.url(), json=body)
        assert response.status_code != 401, op.key


async def test_every_protected_operation_refuses_a_missing_or_forged_token(
    app: FastAPI, client: httpx.AsyncClient, user: Account
) -> None:
    """Authentication answers first: even a request with a bad body or id gets 401."""
    forged = unsigned(user.access_token)
    protected = [op for op in operations(app) if op.needs_token]
    assert protected
    for op in protected:
        for headers in ({}, bearer(forged)):
            body = {} if "requestBody" in op.spec else None
            response = await client.request(op.method, op.url(), json=body, headers=headers)
            assert_problem(response, 401)
            assert response.headers["www-authenticate"].startswith("Bearer"), op.key


async def test_the_token_is_read_only_from_a_bearer_authorization_header(
    client: httpx.AsyncClient, user: Account
) -> None:
    """Not from the query string (it would end up in logs) nor a cookie (no CSRF to fear)."""
    token = user.access_token
    elsewhere = {
        "query": {"params": {"access_token": token}},
        "cookie": {"headers": {"Cookie": f"access_token={token}; Authorization=Bearer%20{token}"}},
        "basic scheme": {"headers": {"Authorization": f"Basic {token}"}},
        "token scheme": {"headers": {"Authorization": f"Token {token}"}},
        "bearer without space": {"headers": {"Authorization": f"Bearer{token}"}},
    }
    for where, request in elsewhere.items():
        response = await client.get(ME, **request)  # type: ignore[arg-type]
        assert response.status_code == 401, where
        assert_problem(response, 401)


async def test_an_access_token_is_short_lived_and_says_nothing_personal(
    client: httpx.AsyncClient, user: Account
) -> None:
    response = await login(client, user.username, user.password)
    claims = claims_of(response.json()["access_token"])

    assert response.json()["expires_in"] == ACCESS_LIFETIME_SECONDS
    assert claims["exp"] - claims["iat"] == ACCESS_LIFETIME_SECONDS
    assert set(claims) == {"iss", "aud", "sub", "iat", "exp", "jti", "type", "ver"}
    assert response.headers["cache-control"] == "no-store"


async def test_login_answers_alike_for_a_wrong_password_an_unknown_name_and_an_inactive_user(
    client: httpx.AsyncClient, user: Account, other_user: Account, admin: Account
) -> None:
    deactivated = await client.patch(
        f"/api/v1/users/{other_user.id}", json={"is_active": False}, headers=admin.headers
    )
    assert deactivated.status_code == 200

    answers = [
        await login(client, user.username, "not the password"),
        await login(client, "nobody-at-all", "not the password"),
        await login(client, other_user.username, other_user.password),  # right, but inactive
    ]

    bodies = []
    for response in answers:
        body = assert_problem(response, 400)
        assert body["error"] == "invalid_grant"
        bodies.append({k: v for k, v in body.items() if k not in ("request_id", "instance")})
    assert bodies[0] == bodies[1] == bodies[2]
    assert {r.headers.get("www-authenticate") for r in answers} == {None}


async def test_repeated_failures_lock_the_account_even_for_the_right_password(
    client: httpx.AsyncClient, user: Account
) -> None:
    for _ in range(5):  # LOGIN_MAX_FAILURES
        assert_problem(await login(client, user.username, "guess"), 400)

    response = await login(client, user.username, user.password)

    assert_problem(response, 429)
    assert int(response.headers["retry-after"]) > 0
    assert "access_token" not in response.text


async def test_logout_ends_the_refresh_token_family(
    client: httpx.AsyncClient, user: Account
) -> None:
    rotated = await refresh(client, user.refresh_token)
    assert rotated.status_code == 200
    newest = rotated.json()["refresh_token"]

    assert (
        await client.post("/api/v1/auth/logout", json={"refresh_token": user.refresh_token})
    ).status_code == 204

    assert_problem(await refresh(client, newest), 401)


async def test_a_refresh_token_works_once(client: httpx.AsyncClient, user: Account) -> None:
    first = await refresh(client, user.refresh_token)
    assert first.status_code == 200

    again = await refresh(client, user.refresh_token)

    assert_problem(again, 401)
    assert_problem(await refresh(client, first.json()["refresh_token"]), 401)  # family revoked


async def test_a_password_change_ends_every_earlier_token_at_once(
    client: httpx.AsyncClient, user: Account
) -> None:
    changed = await client.post(
        f"{ME}/password",
        json={"current_password": user.password, "new_password": "a brand new passphrase"},
        headers=user.headers,
    )
    assert changed.status_code == 204

    assert_problem(await client.get(ME, headers=user.headers), 401)
    assert_problem(await refresh(client, user.refresh_token), 401)
    assert_problem(await login(client, user.username, user.password), 400)
    assert (await login(client, user.username, "a brand new passphrase")).status_code == 200


async def test_a_deleted_account_s_tokens_stop_working(
    client: httpx.AsyncClient, user: Account
) -> None:
    assert (await client.delete(ME, headers=user.headers)).status_code == 204

    assert_problem(await client.get(ME, headers=user.headers), 401)
    assert_problem(await refresh(client, user.refresh_token), 401)
