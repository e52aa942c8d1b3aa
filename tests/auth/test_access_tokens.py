"""Access tokens on a protected route (GET /api/v1/users/me).

Covers API.md's rules for access tokens: HS256 with SECRET_KEY and a pinned
algorithm list; required claims; refusal (401 with `WWW-Authenticate: Bearer`)
of expired, badly signed, unsigned, other-algorithm, refresh, wrong-issuer or
wrong-audience tokens and of tokens whose user is deleted, inactive or has
changed password since; a token issued after a password change working at
once; and keys from PREVIOUS_SECRET_KEYS still being accepted.
"""

import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from jose import jwt

from tests.auth.helpers import (
    ME_URL,
    OTHER_KEY,
    change_password,
    claims_of,
    deactivate,
    header_of,
    new_jti,
    past,
    resign,
    sign,
    unsigned,
)
from tests.conftest import TEST_SECRET_KEY, make_settings
from tests.support import (
    Account,
    assert_unauthenticated,
    bearer,
    client_for,
    refresh,
    tokens_for,
)

ISSUER = AUDIENCE = "storefront-api"


async def me(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    return await client.get(ME_URL, headers=headers)


def assert_unauthorized(response: httpx.Response) -> None:
    body = assert_unauthenticated(response)
    assert "username" not in body


async def test_access_token_opens_the_protected_route(
    client: httpx.AsyncClient, user: Account
) -> None:
    response = await me(client, user.headers)

    assert response.status_code == 200, response.text
    assert response.json()["id"] == user.id
    assert response.json()["username"] == "alice"


async def test_access_token_is_an_hs256_jwt_signed_with_the_secret_key(user: Account) -> None:
    header = header_of(user.access_token)
    assert header["alg"] == "HS256"

    claims = jwt.decode(user.access_token, TEST_SECRET_KEY, algorithms=["HS256"], audience=AUDIENCE)

    assert claims["sub"] == str(user.id)
    assert claims["iss"] == ISSUER
    assert claims["exp"] - claims["iat"] == 15 * 60
    assert {"exp", "iat", "sub", "jti", "type"} <= set(claims)
    assert claims["type"] == "access"
    with pytest.raises(jwt.JWTError):
        jwt.decode(user.access_token, OTHER_KEY, algorithms=["HS256"], audience=AUDIENCE)


@pytest.mark.parametrize("scheme", ["bearer", "BEARER"])
async def test_scheme_name_is_case_insensitive(
    client: httpx.AsyncClient, user: Account, scheme: str
) -> None:
    response = await me(client, {"Authorization": f"{scheme} {user.access_token}"})
    assert response.status_code == 200, response.text


async def test_missing_authorization_header_gets_401(client: httpx.AsyncClient) -> None:
    assert_unauthorized(await me(client, {}))


@pytest.mark.parametrize(
    "value",
    ["Basic YWxpY2U6c2VjcmV0", "Token {token}", "{token}", "Bearer", "Bearer ", "Bearerx {token}"],
)
async def test_wrong_authorization_scheme_gets_401(
    client: httpx.AsyncClient, user: Account, value: str
) -> None:
    response = await me(client, {"Authorization": value.format(token=user.access_token)})
    assert_unauthorized(response)


async def test_expired_token_gets_401(client: httpx.AsyncClient, user: Account) -> None:
    expired = resign(user.access_token, exp=past(seconds=30), iat=past(minutes=16))
    assert_unauthorized(await me(client, bearer(expired)))


@pytest.mark.parametrize("where", ["signature", "payload"])
async def test_tampered_token_gets_401(
    client: httpx.AsyncClient, user: Account, other_user: Account, where: str
) -> None:
    header, payload, signature = user.access_token.split(".")
    if where == "signature":
        flipped = "A" if signature[0] != "A" else "B"
        token = f"{header}.{payload}.{flipped}{signature[1:]}"
    else:
        # Bob's claims under Alice's signature.
        token = f"{header}.{other_user.access_token.split('.')[1]}.{signature}"
    assert_unauthorized(await me(client, bearer(token)))


async def test_token_signed_with_another_key_gets_401(
    client: httpx.AsyncClient, user: Account
) -> None:
    assert_unauthorized(await me(client, bearer(resign(user.access_token, key=OTHER_KEY))))


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("keep_signature", [False, True], ids=["no-signature", "old-signature"])
async def test_unsigned_token_gets_401(
    client: httpx.AsyncClient, user: Account, alg: str, keep_signature: bool
) -> None:
    token = unsigned(user.access_token, alg=alg, keep_signature=keep_signature)
    assert token.split(".")[0] != user.access_token.split(".")[0]

    assert_unauthorized(await me(client, bearer(token)))


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
async def test_other_algorithm_with_the_right_key_gets_401(
    client: httpx.AsyncClient, user: Account, algorithm: str
) -> None:
    token = resign(user.access_token, algorithm=algorithm)
    assert header_of(token)["alg"] == algorithm

    assert_unauthorized(await me(client, bearer(token)))


async def test_refresh_token_used_as_access_token_gets_401(
    client: httpx.AsyncClient, user: Account
) -> None:
    assert_unauthorized(await me(client, bearer(user.refresh_token)))


@pytest.mark.parametrize(
    ("typ", "changes"),
    [
        ("at+jwt", {"type": "refresh"}),
        ("rt+jwt", {"type": "access"}),
        ("JWT", {}),
    ],
    ids=["refresh-claim", "refresh-header", "plain-jwt-header"],
)
async def test_token_of_another_kind_gets_401(
    client: httpx.AsyncClient, user: Account, typ: str, changes: dict[str, Any]
) -> None:
    token = resign(user.access_token, typ=typ, **changes)
    assert_unauthorized(await me(client, bearer(token)))


@pytest.mark.parametrize(
    "changes",
    [
        {"iss": "someone-else"},
        {"aud": "another-service"},
        {"aud": ["another-service"]},
    ],
    ids=["issuer", "audience", "audience-list"],
)
async def test_wrong_issuer_or_audience_gets_401(
    client: httpx.AsyncClient, user: Account, changes: dict[str, Any]
) -> None:
    assert_unauthorized(await me(client, bearer(resign(user.access_token, **changes))))


@pytest.mark.parametrize("claim", ["exp", "iat", "sub", "jti", "type", "iss", "aud"])
async def test_token_missing_a_required_claim_gets_401(
    client: httpx.AsyncClient, user: Account, claim: str
) -> None:
    token = resign(user.access_token, drop=(claim,))
    assert claim not in claims_of(token)

    assert_unauthorized(await me(client, bearer(token)))


@pytest.mark.parametrize(
    "changes",
    [
        {"sub": "0"},
        {"sub": "-1"},
        {"sub": "abc"},
        {"sub": "\u0661"},  # ARABIC-INDIC DIGIT ONE: a digit, but not ASCII
        {"sub": str(2**63)},
        {"sub": "9" * 5000},
        {"sub": 1},
        {"exp": 10**20},
        {"exp": 2**62},
        {"exp": "never"},
        {"iat": "yesterday"},
        {"jti": 42},
        {"ver": "1"},
        {"ver": True},
    ],
)
async def test_signed_token_with_nonsense_claims_gets_401_not_an_error(
    client: httpx.AsyncClient, user: Account, changes: dict[str, Any]
) -> None:
    token = resign(user.access_token, **changes)
    assert_unauthorized(await me(client, bearer(token)))


async def test_token_for_a_user_that_never_existed_gets_401(
    client: httpx.AsyncClient, user: Account
) -> None:
    token = resign(user.access_token, sub="999999", jti=new_jti())
    assert_unauthorized(await me(client, bearer(token)))


async def test_token_of_a_deleted_user_gets_401(client: httpx.AsyncClient, user: Account) -> None:
    response = await client.delete(ME_URL, headers=user.headers)
    assert response.status_code == 204

    assert_unauthorized(await me(client, user.headers))


async def test_token_of_a_deactivated_user_gets_401(
    client: httpx.AsyncClient, user: Account, admin: Account
) -> None:
    await deactivate(client, admin, user.id)

    assert_unauthorized(await me(client, user.headers))
    # The admin's own token is unaffected.
    assert (await me(client, admin.headers)).status_code == 200


async def test_token_of_a_reactivated_user_issued_before_deactivation_stays_dead(
    client: httpx.AsyncClient, user: Account, admin: Account
) -> None:
    await deactivate(client, admin, user.id)
    response = await client.patch(
        f"/api/v1/users/{user.id}", json={"is_active": True}, headers=admin.headers
    )
    assert response.status_code == 200

    assert_unauthorized(await me(client, user.headers))
    fresh = await tokens_for(client, "alice", user.password)
    assert (await me(client, bearer(fresh["access_token"]))).status_code == 200


async def test_token_issued_before_a_password_change_gets_401(
    client: httpx.AsyncClient, user: Account
) -> None:
    second_login = await tokens_for(client, "alice", user.password)

    await change_password(client, user, "a brand new passphrase")

    assert_unauthorized(await me(client, user.headers))
    assert_unauthorized(await me(client, bearer(second_login["access_token"])))


async def test_token_issued_right_after_a_password_change_works_at_once(
    client: httpx.AsyncClient, user: Account
) -> None:
    await change_password(client, user, "a brand new passphrase")
    fresh = await tokens_for(client, "alice", "a brand new passphrase")

    # Very likely the same second as the change: no timestamp comparison may refuse it.
    response = await me(client, bearer(fresh["access_token"]))

    assert response.status_code == 200, response.text
    assert response.json()["id"] == user.id
    assert_unauthorized(await me(client, user.headers))


async def test_token_with_a_stale_version_but_a_fresh_iat_gets_401(
    client: httpx.AsyncClient, user: Account
) -> None:
    # A token issued before the change, even if it claims a later issue time.
    await change_password(client, user, "a brand new passphrase")
    future_iat = int(datetime.now(UTC).timestamp()) + 5
    token = resign(user.access_token, iat=future_iat)

    assert_unauthorized(await me(client, bearer(token)))


async def test_tokens_signed_with_a_previous_key_are_still_accepted(
    client: httpx.AsyncClient, database_url: str, tmp_path: Path, user: Account
) -> None:
    new_key = "the-rotated-in-secret-key-for-this-test-0123456789abcdef"
    settings = make_settings(
        database_url, tmp_path, secret_key=new_key, previous_secret_keys=[TEST_SECRET_KEY]
    )
    async with client_for(settings) as (_, rotated):
        # Alice's tokens were signed with the old key, before the rotation.
        assert (await me(rotated, user.headers)).status_code == 200
        refreshed = await refresh(rotated, user.refresh_token)
        assert refreshed.status_code == 200, refreshed.text

        # New tokens are signed with the new key only.
        fresh = await tokens_for(rotated, "alice", user.password)
        for token in (fresh["access_token"], refreshed.json()["access_token"]):
            jwt.decode(token, new_key, algorithms=["HS256"], audience=AUDIENCE)
            with pytest.raises(jwt.JWTError):
                jwt.decode(token, TEST_SECRET_KEY, algorithms=["HS256"], audience=AUDIENCE)
            assert (await me(rotated, bearer(token))).status_code == 200

        # A key that is neither current nor listed is still refused.
        stranger = resign(user.access_token, key=OTHER_KEY)
        assert_unauthorized(await me(rotated, bearer(stranger)))


async def test_tokens_signed_with_a_dropped_key_are_refused(
    client: httpx.AsyncClient, database_url: str, tmp_path: Path, user: Account
) -> None:
    new_key = "the-rotated-in-secret-key-for-this-test-0123456789abcdef"
    settings = make_settings(database_url, tmp_path, secret_key=new_key)
    async with client_for(settings) as (_, rotated):
        assert_unauthorized(await me(rotated, user.headers))
        assert_unauthorized(await refresh(rotated, user.refresh_token))


async def test_crafted_token_signed_with_the_right_key_is_accepted(
    client: httpx.AsyncClient, user: Account
) -> None:
    # The control for the refusals above: the same crafting, nothing wrong with it.
    claims = claims_of(user.access_token) | {"jti": new_jti()}
    token = sign(claims)

    response = await me(client, bearer(token))

    assert response.status_code == 200, response.text


async def test_a_kid_header_is_ignored_not_used_to_find_a_key(
    client: httpx.AsyncClient, user: Account
) -> None:
    # No key ids are configured, so the header names nothing: a token signed
    # with the service's key works whatever its kid says, and one signed with
    # another key fails whatever its kid says.
    claims = claims_of(user.access_token) | {"jti": new_jti()}
    for kid in ("previous", "../../etc/passwd", "' OR 1=1 --"):
        ours = jwt.encode(
            claims, TEST_SECRET_KEY, algorithm="HS256", headers={"typ": "at+jwt", "kid": kid}
        )
        assert (await me(client, bearer(ours))).status_code == 200
        theirs = jwt.encode(
            claims, OTHER_KEY, algorithm="HS256", headers={"typ": "at+jwt", "kid": kid}
        )
        assert_unauthorized(await me(client, bearer(theirs)))


async def test_a_key_embedded_in_the_token_is_not_trusted(
    client: httpx.AsyncClient, user: Account
) -> None:
    # RFC 8725 3.10: a token must not choose the key it is checked with.
    claims = claims_of(user.access_token) | {"jti": new_jti()}
    secret = base64.urlsafe_b64encode(OTHER_KEY.encode()).decode().rstrip("=")
    headers = {
        "typ": "at+jwt",
        "jwk": {"kty": "oct", "k": secret},
        "jku": "http://127.0.0.1:9/keys.json",
    }
    forged = jwt.encode(claims, OTHER_KEY, algorithm="HS256", headers=headers)
    assert_unauthorized(await me(client, bearer(forged)))
