"""POST /api/v1/auth/token: the OAuth2 password grant, its token pair and its RFC 6749 errors.

Covers the token endpoint rows of API.md's Auth section and the token
endpoint's error codes in the Errors section (invalid_grant, invalid_request,
unsupported_grant_type), including the no-enumeration rule.
"""

from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.auth.models import RefreshFamily
from tests.auth.helpers import (
    ME_URL,
    TOKEN_URL,
    claims_of,
    deactivate,
    without_request,
)
from tests.conftest import make_settings
from tests.support import (
    DEFAULT_PASSWORD,
    Account,
    DatabaseProbe,
    assert_problem,
    bearer,
    client_for,
    login,
    register,
)


def assert_token_pair(response: httpx.Response, expires_in: int = 15 * 60) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == expires_in  # ACCESS_TOKEN_EXPIRE_MINUTES defaults to 15
    assert isinstance(body["access_token"], str)
    assert body["access_token"].count(".") == 2
    assert isinstance(body["refresh_token"], str)
    assert body["refresh_token"].count(".") == 2
    assert body["access_token"] != body["refresh_token"]
    return body


async def whoami(client: httpx.AsyncClient, access_token: str) -> int:
    response = await client.get(ME_URL, headers=bearer(access_token))
    assert response.status_code == 200, response.text
    user_id: int = response.json()["id"]
    return user_id


def assert_oauth2_error(response: httpx.Response, error: str) -> dict[str, Any]:
    body = assert_problem(response, 400)
    assert body["error"] == error
    assert "access_token" not in body
    return body


async def test_login_by_username_returns_a_token_pair(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    families_before = await db.scalar(select(func.count()).select_from(RefreshFamily))

    body = assert_token_pair(await login(client, "alice", user.password))

    assert await whoami(client, body["access_token"]) == user.id
    families_after = await db.scalar(select(func.count()).select_from(RefreshFamily))
    assert families_after == (families_before or 0) + 1


@pytest.mark.parametrize(
    "name",
    ["alice", "ALICE", "aLiCe", "alice@example.com", "ALICE@EXAMPLE.COM", "Alice@Example.Com"],
)
async def test_login_by_username_or_email_ignores_case(
    client: httpx.AsyncClient, user: Account, name: str
) -> None:
    body = assert_token_pair(await login(client, name, user.password))
    assert await whoami(client, body["access_token"]) == user.id


async def test_password_is_case_sensitive(client: httpx.AsyncClient, user: Account) -> None:
    response = await login(client, "alice", user.password.upper())
    assert_oauth2_error(response, "invalid_grant")


async def test_grant_type_password_is_accepted(client: httpx.AsyncClient, user: Account) -> None:
    response = await client.post(
        TOKEN_URL,
        data={"grant_type": "password", "username": "alice", "password": user.password},
    )
    body = assert_token_pair(response)
    assert await whoami(client, body["access_token"]) == user.id


@pytest.mark.parametrize(
    "grant_type", ["client_credentials", "authorization_code", "Password", "refresh-token"]
)
async def test_other_grant_types_get_unsupported_grant_type(
    client: httpx.AsyncClient, user: Account, grant_type: str
) -> None:
    response = await client.post(
        TOKEN_URL,
        data={"grant_type": grant_type, "username": "alice", "password": user.password},
    )
    assert_oauth2_error(response, "unsupported_grant_type")
    assert response.headers["cache-control"] == "no-store"


async def test_an_empty_grant_type_counts_as_not_sent(
    client: httpx.AsyncClient, user: Account
) -> None:
    """RFC 6749 section 3.1: parameters sent without a value are treated as omitted."""
    response = await client.post(
        TOKEN_URL, data={"grant_type": "", "username": "alice", "password": user.password}
    )
    assert_token_pair(response)
    missing = await client.post(TOKEN_URL, data={"grant_type": "", "username": "alice"})
    assert_oauth2_error(missing, "invalid_request")


@pytest.mark.parametrize(
    "form",
    [
        {"grant_type": "client_credentials"},
        {"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"},
        {"grant_type": "authorization_code", "username": "bad\nname", "password": ""},
        {"grant_type": "implicit", "username": "x" * 400, "password": "p" * 2000},
        {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "refresh_token": ""},
    ],
    ids=["alone", "client credentials", "malformed fields", "too long", "empty refresh"],
)
async def test_an_unsupported_grant_type_is_answered_before_any_other_check(
    client: httpx.AsyncClient, form: dict[str, str]
) -> None:
    assert_oauth2_error(await client.post(TOKEN_URL, data=form), "unsupported_grant_type")


async def test_wrong_password_gets_invalid_grant(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    families_before = await db.scalar(select(func.count()).select_from(RefreshFamily))

    response = await login(client, "alice", "not the password at all")

    assert_oauth2_error(response, "invalid_grant")
    assert "www-authenticate" not in response.headers  # a 400, not a 401
    # Nothing was issued.
    assert await db.scalar(select(func.count()).select_from(RefreshFamily)) == families_before


async def test_unknown_user_gets_invalid_grant(client: httpx.AsyncClient) -> None:
    response = await login(client, "nobody-here", "whatever password")
    assert_oauth2_error(response, "invalid_grant")


async def test_right_password_of_an_inactive_user_gets_invalid_grant(
    client: httpx.AsyncClient, user: Account, admin: Account, db: DatabaseProbe
) -> None:
    await deactivate(client, admin, user.id)
    families_before = await db.scalar(
        select(func.count()).select_from(RefreshFamily).where(RefreshFamily.user_id == user.id)
    )

    response = await login(client, "alice", user.password)

    assert_oauth2_error(response, "invalid_grant")
    families_after = await db.scalar(
        select(func.count()).select_from(RefreshFamily).where(RefreshFamily.user_id == user.id)
    )
    assert families_after == families_before


async def test_failed_logins_look_the_same_whether_or_not_the_user_exists(
    client: httpx.AsyncClient, user: Account, other_user: Account, admin: Account
) -> None:
    await deactivate(client, admin, other_user.id)

    wrong_password = await login(client, "alice", "not the password at all")
    unknown_user = await login(client, "nobody-here", "not the password at all")
    unknown_email = await login(client, "nobody@example.com", "not the password at all")
    inactive_user = await login(client, "bob", other_user.password)

    responses = [wrong_password, unknown_user, unknown_email, inactive_user]
    bodies = [without_request(assert_oauth2_error(r, "invalid_grant")) for r in responses]
    assert all(body == bodies[0] for body in bodies), bodies
    header_names = {"content-type", "cache-control", "www-authenticate", "retry-after"}
    headers = [{k: v for k, v in r.headers.items() if k in header_names} for r in responses]
    assert all(h == headers[0] for h in headers), headers


@pytest.mark.parametrize(
    "form",
    [
        {"password": "correct horse battery"},
        {"username": "alice"},
        {"username": "", "password": "correct horse battery"},
        {"username": "alice", "password": ""},
        {},
    ],
    ids=["no-username", "no-password", "empty-username", "empty-password", "empty-form"],
)
async def test_malformed_form_gets_invalid_request(
    client: httpx.AsyncClient, user: Account, form: dict[str, str]
) -> None:
    response = await client.post(TOKEN_URL, data=form)
    assert_oauth2_error(response, "invalid_request")


async def test_json_body_instead_of_a_form_gets_invalid_request(
    client: httpx.AsyncClient, user: Account
) -> None:
    response = await client.post(TOKEN_URL, json={"username": "alice", "password": user.password})
    assert_oauth2_error(response, "invalid_request")


async def test_form_sent_as_a_query_string_is_not_read(
    client: httpx.AsyncClient, user: Account
) -> None:
    response = await client.post(TOKEN_URL, params={"username": "alice", "password": user.password})
    assert_oauth2_error(response, "invalid_request")


@pytest.mark.parametrize(
    "form",
    [
        {"username": "alice\x00", "password": "correct horse battery"},
        {"username": "alice", "password": "correct\x00horse battery"},
        {"username": "a" * 100_000, "password": "correct horse battery"},
        {"username": "alice", "password": "p" * 100_000},
        {"username": "\ud800", "password": "correct horse battery"},
        {"username": "alice\r\nX-Injected: yes", "password": "correct horse battery"},
    ],
    ids=["nul-username", "nul-password", "long-username", "long-password", "surrogate", "crlf"],
)
async def test_hostile_form_values_get_a_400_not_a_server_error(
    client: httpx.AsyncClient, user: Account, form: dict[str, str]
) -> None:
    # Percent-encoded by hand: httpx would refuse to encode a lone surrogate.
    content = "&".join(f"{name}={_percent(value)}" for name, value in form.items()).encode()
    response = await client.post(
        TOKEN_URL,
        content=content,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    body = assert_problem(response, 400)
    assert body["error"] in {"invalid_request", "invalid_grant"}
    assert "X-Injected" not in response.headers


def _percent(value: str) -> str:
    return "".join(f"%{byte:02X}" for byte in value.encode("utf-8", "surrogatepass"))


async def test_undecodable_bytes_in_the_form_get_a_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        TOKEN_URL,
        content=b"username=%FF%FE%FD&password=%C0%AF%80",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    body = assert_problem(response, 400)
    assert body["error"] in {"invalid_request", "invalid_grant"}


@pytest.mark.parametrize("name", ["alic%", "al_ce", "%", "' OR '1'='1", "alice' --"])
async def test_wildcards_and_quotes_in_the_name_match_no_one(
    client: httpx.AsyncClient, user: Account, name: str, db: DatabaseProbe
) -> None:
    families = select(func.count()).select_from(RefreshFamily)
    families_before = await db.scalar(families)

    response = await login(client, name, user.password)

    assert_oauth2_error(response, "invalid_grant")
    assert await db.scalar(families) == families_before


async def test_token_path_with_a_trailing_slash_is_served_the_same(
    client: httpx.AsyncClient, user: Account
) -> None:
    response = await client.post(
        f"{TOKEN_URL}/", data={"username": "alice", "password": user.password}
    )
    body = assert_token_pair(response)
    assert await whoami(client, body["access_token"]) == user.id


async def test_get_on_the_token_endpoint_gets_405_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.get(TOKEN_URL)
    assert_problem(response, 405)
    assert "POST" in response.headers["allow"]


async def test_expires_in_follows_the_configured_lifetime(
    database_url: str, tmp_path: Path, user: Account
) -> None:
    settings = make_settings(database_url, tmp_path, access_token_expire_minutes=2)
    async with client_for(settings) as (_, other):
        response = await login(other, "alice", user.password)

    body = assert_token_pair(response, expires_in=120)
    claims = claims_of(body["access_token"])
    assert claims["exp"] - claims["iat"] == 120


async def test_login_by_a_non_ascii_email_as_registered(client: httpx.AsyncClient) -> None:
    response = await register(client, "zoe", email="Zoë.Ünï@example.com")
    assert response.status_code == 201, response.text

    body = assert_token_pair(await login(client, "Zoë.Ünï@example.com", DEFAULT_PASSWORD))

    assert await whoami(client, body["access_token"]) == response.json()["id"]


async def test_login_by_a_non_ascii_email_ignores_case(client: httpx.AsyncClient) -> None:
    response = await register(client, "zoe", email="Zoë.Ünï@example.com")
    assert response.status_code == 201, response.text

    body = assert_token_pair(await login(client, "ZOË.ÜNÏ@EXAMPLE.COM", DEFAULT_PASSWORD))

    assert await whoami(client, body["access_token"]) == response.json()["id"]


async def test_non_ascii_emails_are_unique_without_regard_to_case(
    client: httpx.AsyncClient,
) -> None:
    first = await register(client, "zoe", email="Zoë.Ünï@example.com")
    assert first.status_code == 201, first.text

    duplicate = await register(client, "zoey", email="zoË.üNÏ@example.com")

    assert duplicate.status_code == 409, duplicate.text


async def test_a_multipart_form_without_a_boundary_is_invalid_request(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/api/v1/auth/token",
        content=b"username=alice&password=x",
        headers={"Content-Type": "multipart/form-data"},
    )
    body = assert_problem(response, 400)
    assert body["error"] == "invalid_request"
