"""Registration, POST /api/v1/users: the user it returns, what it stores, what it refuses.

Covers the Users section of API.md on registration: 201 with `Location` and
the user, the `user` role, no password or hash in the answer, the body's
rules (lengths, characters, a valid email, no unknown fields), uniqueness
of username and email without regard to case, also under concurrent
registrations.
"""

import asyncio
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.users.models import User
from tests.support import DEFAULT_PASSWORD, DatabaseProbe, assert_problem, error_locations, login
from tests.users.common import assert_user_body, assert_utc_time, stored_user, user_count

URL = "/api/v1/users"


def valid_body(**changes: Any) -> dict[str, Any]:
    body = {
        "username": "carol",
        "email": "carol@example.com",
        "password": DEFAULT_PASSWORD,
        "full_name": "Carol Danvers",
    }
    body.update(changes)
    return body


async def post_raw(client: httpx.AsyncClient, payload: object) -> httpx.Response:
    """Posts JSON with non-ASCII escaped, so lone surrogates reach the server as `\\udXXX`."""
    content = json.dumps(payload, ensure_ascii=True).encode("ascii")
    return await client.post(URL, content=content, headers={"Content-Type": "application/json"})


async def test_registration_answers_201_with_location_and_the_new_user(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(URL, json=valid_body())

    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    body = assert_user_body(response.json())
    assert response.headers["location"] == f"/api/v1/users/{body['id']}"
    assert body["username"] == "carol"
    assert body["email"] == "carol@example.com"
    assert body["full_name"] == "Carol Danvers"
    assert body["role"] == "user"
    assert body["is_active"] is True
    assert assert_utc_time(body["updated_at"]) >= assert_utc_time(body["created_at"])


async def test_registration_stores_the_user_as_returned(
    client: httpx.AsyncClient, db: DatabaseProbe
) -> None:
    body = (await client.post(URL, json=valid_body())).json()

    stored = await stored_user(db, body["id"])
    assert stored.username == "carol"
    assert stored.email == "carol@example.com"
    assert stored.full_name == "Carol Danvers"
    assert stored.role == "user"
    assert stored.is_active is True
    assert stored.created_at == assert_utc_time(body["created_at"])


async def test_full_name_is_optional_and_stored_as_null(
    client: httpx.AsyncClient, db: DatabaseProbe
) -> None:
    body = valid_body()
    del body["full_name"]
    response = await client.post(URL, json=body)

    assert response.status_code == 201, response.text
    assert response.json()["full_name"] is None
    assert (await stored_user(db, response.json()["id"])).full_name is None


async def test_full_name_may_be_sent_as_null(client: httpx.AsyncClient) -> None:
    response = await client.post(URL, json=valid_body(full_name=None))
    assert response.status_code == 201, response.text
    assert response.json()["full_name"] is None


async def test_registration_never_returns_the_password_or_its_hash(
    client: httpx.AsyncClient, db: DatabaseProbe
) -> None:
    response = await client.post(URL, json=valid_body())
    assert response.status_code == 201

    body = response.json()
    for key in body:
        assert "password" not in key.lower()
        assert "hash" not in key.lower()
    stored = await stored_user(db, body["id"])
    assert stored.password_hash not in response.text
    assert DEFAULT_PASSWORD not in response.text
    assert "$argon2" not in response.text


async def test_password_is_stored_as_an_argon2id_hash_and_signs_in(
    client: httpx.AsyncClient, db: DatabaseProbe
) -> None:
    response = await client.post(URL, json=valid_body())
    stored = await stored_user(db, response.json()["id"])

    assert stored.password_hash.startswith("$argon2id$")
    assert DEFAULT_PASSWORD not in stored.password_hash
    signed_in = await login(client, "carol", DEFAULT_PASSWORD)
    assert signed_in.status_code == 200, signed_in.text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("username", "abc", id="username-3"),
        pytest.param("username", "u" * 50, id="username-50"),
        pytest.param("username", "A.b_c-9", id="username-all-allowed-characters"),
        pytest.param("password", "p" * 8, id="password-8"),
        pytest.param("password", "p" * 128, id="password-128"),
        pytest.param("password", "spaces and ünïcode ok", id="password-any-characters"),
        pytest.param("full_name", "f" * 200, id="full-name-200"),
        pytest.param("full_name", "Zoë Ångström", id="full-name-unicode"),
    ],
)
async def test_values_at_the_limits_are_accepted(
    client: httpx.AsyncClient, field: str, value: str
) -> None:
    response = await client.post(URL, json=valid_body(**{field: value}))
    assert response.status_code == 201, response.text
    if field != "password":
        assert response.json()[field] == value


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("username", "ab", id="username-too-short"),
        pytest.param("username", "", id="username-empty"),
        pytest.param("username", "u" * 51, id="username-too-long"),
        pytest.param("username", "carol danvers", id="username-space"),
        pytest.param("username", "carol@home", id="username-at-sign"),
        pytest.param("username", "carolé", id="username-non-ascii"),
        pytest.param("username", "carol/x", id="username-slash"),
        pytest.param("username", "carol\n", id="username-trailing-newline"),
        pytest.param("username", 12345, id="username-number"),
        pytest.param("email", "not-an-email", id="email-no-at"),
        pytest.param("email", "carol@", id="email-no-domain"),
        pytest.param("email", "@example.com", id="email-no-local-part"),
        pytest.param("email", "carol@example com", id="email-space"),
        pytest.param("email", "", id="email-empty"),
        pytest.param("password", "p" * 7, id="password-too-short"),
        pytest.param("password", "p" * 129, id="password-too-long"),
        pytest.param("password", 12345678, id="password-number"),
        pytest.param("full_name", "f" * 201, id="full-name-too-long"),
    ],
)
async def test_invalid_field_gets_422_pointing_at_it(
    client: httpx.AsyncClient, db: DatabaseProbe, field: str, value: object
) -> None:
    response = await client.post(URL, json=valid_body(**{field: value}))

    assert_problem(response, 422)
    assert error_locations(response) == [["body", field]]
    assert await user_count(db) == 0


async def test_password_is_not_echoed_in_a_validation_error(client: httpx.AsyncClient) -> None:
    secret = "short1!"
    response = await client.post(URL, json=valid_body(password=secret))
    assert_problem(response, 422)
    assert secret not in response.text


@pytest.mark.parametrize("missing", ["username", "email", "password"])
async def test_missing_required_field_gets_422(
    client: httpx.AsyncClient, db: DatabaseProbe, missing: str
) -> None:
    body = valid_body()
    del body[missing]
    response = await client.post(URL, json=body)

    assert_problem(response, 422)
    assert error_locations(response) == [["body", missing]]
    assert await user_count(db) == 0


async def test_empty_object_reports_every_missing_field(client: httpx.AsyncClient) -> None:
    response = await client.post(URL, json={})
    assert_problem(response, 422)
    assert sorted(error_locations(response)) == [
        ["body", "email"],
        ["body", "password"],
        ["body", "username"],
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("role", "admin"),
        ("role", "user"),
        ("is_active", True),
        ("id", 1),
        ("created_at", "2020-01-01T00:00:00Z"),
        ("updated_at", "2020-01-01T00:00:00Z"),
        ("password_hash", "$argon2id$v=19$m=64,t=1,p=1$abc$def"),
        ("token_version", 7),
    ],
)
async def test_unknown_field_gets_422_and_creates_nothing(
    client: httpx.AsyncClient, db: DatabaseProbe, field: str, value: object
) -> None:
    response = await client.post(URL, json=valid_body(**{field: value}))

    assert_problem(response, 422)
    assert error_locations(response) == [["body", field]]
    assert await user_count(db) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("username", "car\u0000ol", id="username-nul"),
        pytest.param("email", "car\u0000ol@example.com", id="email-nul"),
        pytest.param("password", "correct\u0000horse", id="password-nul"),
        pytest.param("full_name", "Carol\u0000Danvers", id="full-name-nul"),
        pytest.param("username", "car\ud800ol", id="username-lone-surrogate"),
        pytest.param("email", "car\udfffol@example.com", id="email-lone-surrogate"),
        pytest.param("password", "correct horse \ud83d", id="password-lone-surrogate"),
        pytest.param("full_name", "Carol \udc00", id="full-name-lone-surrogate"),
    ],
)
async def test_nul_bytes_and_lone_surrogates_get_422_not_500(
    client: httpx.AsyncClient, db: DatabaseProbe, field: str, value: str
) -> None:
    response = await post_raw(client, valid_body(**{field: value}))

    assert_problem(response, 422)
    assert error_locations(response) == [["body", field]]
    assert await user_count(db) == 0


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        pytest.param(b'{"username": "carol",', "application/json", id="truncated-json"),
        pytest.param(b"username=carol&password=x", "application/json", id="form-as-json"),
        pytest.param(b"", "application/json", id="empty"),
        pytest.param(b"\xff\xfe\x00", "application/json", id="not-utf8"),
        pytest.param(b"[]", "application/json", id="json-array"),
        pytest.param(b'"carol"', "application/json", id="json-string"),
        pytest.param(b"null", "application/json", id="json-null"),
        pytest.param(
            b"username=carol&email=carol%40example.com&password=correct+horse+battery",
            "application/x-www-form-urlencoded",
            id="form",
        ),
    ],
)
async def test_body_that_is_not_a_json_object_gets_422(
    client: httpx.AsyncClient, db: DatabaseProbe, content: bytes, content_type: str
) -> None:
    response = await client.post(URL, content=content, headers={"Content-Type": content_type})

    assert_problem(response, 422)
    assert all(loc[:1] == ["body"] for loc in error_locations(response))
    assert await user_count(db) == 0


@pytest.mark.parametrize(
    ("first", "second", "taken"),
    [
        pytest.param({"username": "carol"}, {"username": "carol"}, "username", id="same-username"),
        pytest.param(
            {"username": "carol"}, {"username": "CaRoL"}, "username", id="username-other-case"
        ),
        pytest.param(
            {"email": "carol@example.com"},
            {"email": "carol@example.com"},
            "email",
            id="same-email",
        ),
        pytest.param(
            {"email": "carol@example.com"},
            {"email": "Carol@EXAMPLE.com"},
            "email",
            id="email-other-case",
        ),
        pytest.param(
            {"email": "zoë.ångström@example.com"},
            {"email": "ZOË.Ångström@example.com"},
            "email",
            id="non-ascii-email-other-case",
        ),
    ],
)
async def test_duplicate_gets_409_and_creates_nothing(
    client: httpx.AsyncClient,
    db: DatabaseProbe,
    first: dict[str, str],
    second: dict[str, str],
    taken: str,
) -> None:
    original = valid_body(**{"username": "carol1", "email": "carol1@example.com", **first})
    assert (await client.post(URL, json=original)).status_code == 201

    duplicate = valid_body(**{"username": "carol2", "email": "carol2@example.com", **second})
    response = await client.post(URL, json=duplicate)

    assert_problem(response, 409, taken)
    assert await user_count(db) == 1
    stored = await db.all(select(User))
    assert [(u.username, u.email) for u in stored] == [(original["username"], original["email"])]


async def test_duplicate_answer_does_not_echo_the_password(client: httpx.AsyncClient) -> None:
    assert (await client.post(URL, json=valid_body())).status_code == 201
    secret = "a distinctive passphrase 42"
    response = await client.post(URL, json=valid_body(email="other@example.com", password=secret))
    assert_problem(response, 409)
    assert secret not in response.text


@pytest.mark.parametrize("racers", [12])
@pytest.mark.concurrency
async def test_concurrent_registrations_of_one_username_let_exactly_one_win(
    client: httpx.AsyncClient, db: DatabaseProbe, racers: int
) -> None:
    bodies = [
        valid_body(username="racer" if i % 2 else "RACER", email=f"racer{i}@example.com")
        for i in range(racers)
    ]
    responses = await asyncio.gather(*(client.post(URL, json=body) for body in bodies))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * (racers - 1), [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert_problem(response, 409, "username")
    count = await db.scalar(
        select(func.count()).select_from(User).where(func.lower(User.username) == "racer")
    )
    assert count == 1
    assert await user_count(db) == 1


@pytest.mark.parametrize("racers", [12])
@pytest.mark.concurrency
async def test_concurrent_registrations_of_one_email_let_exactly_one_win(
    client: httpx.AsyncClient, db: DatabaseProbe, racers: int
) -> None:
    bodies = [
        valid_body(
            username=f"racer{i}", email="Racer@example.com" if i % 2 else "racer@example.com"
        )
        for i in range(racers)
    ]
    responses = await asyncio.gather(*(client.post(URL, json=body) for body in bodies))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * (racers - 1), [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert_problem(response, 409, "email")
    assert await user_count(db) == 1


async def test_registration_with_a_trailing_slash_is_the_same(client: httpx.AsyncClient) -> None:
    response = await client.post(URL + "/", json=valid_body())
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/api/v1/users/{response.json()['id']}"
