"""API.md "Errors": hostile text never produces a 500.

NUL bytes, lone surrogates, invalid UTF-8, very long strings, deeply nested
JSON and huge numbers, sent in JSON bodies, query strings, forms and
headers, are refused with a 4xx problem (or stored verbatim when they are
legitimate text); the server never answers 500 and stores nothing it
refused.
"""

import json
from collections.abc import Iterable

import httpx
import pytest
from sqlalchemy import func, select

from app.products.models import Product
from app.users.models import User
from tests.support import Account, DatabaseProbe, assert_problem

JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

# Raw JSON fragments, written as a client on the wire would send them.
HOSTILE_JSON_VALUES = {
    "nul": r'"\u0000"',
    "nul-inside": r'"abc\u0000def"',
    "lone-high-surrogate": r'"ab\ud800cd"',
    "lone-low-surrogate": r'"\udfff"',
    "reversed-pair": r'"\ude80\ud83d"',
    "control-chars": r'"\u0007\u001b[31m\u007f"',
    "very-long": '"' + "a" * 200_000 + '"',
    "huge-integer": "9" * 5000,
    "huge-float": "1e999",
    "negative-huge-float": "-1e999",
    "tiny-float": "1e-999",
    "nan": "NaN",
    "infinity": "Infinity",
    "nested-array": "[" * 50 + "]" * 50,
    "object": '{"$gt": ""}',
    "null": "null",
    "true": "true",
}


def _problem_or_success(response: httpx.Response, *accepted: int) -> None:
    assert response.status_code < 500, response.text[:500]
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == response.status_code
    else:
        assert response.status_code in accepted, response.text[:500]


def _body_with(template: dict[str, str], field: str, raw_value: str) -> bytes:
    """The JSON text of `template` with `field` set to a raw JSON fragment."""
    parts = [
        f"{json.dumps(name)}: {raw_value if name == field else json.dumps(value)}"
        for name, value in template.items()
    ]
    return ("{" + ", ".join(parts) + "}").encode()


REGISTRATION = {
    "username": "ivan",
    "email": "ivan@example.com",
    "password": "correct horse",
    "full_name": "Ivan",
}
PRODUCT = {"name": "Cup", "description": "Small", "price": "1.50", "tax": "0.10", "sku": "CUP-1"}


def _cases(template: dict[str, str]) -> Iterable[tuple[str, bytes]]:
    for field in template:
        for label, raw in HOSTILE_JSON_VALUES.items():
            yield f"{field}={label}", _body_with(template, field, raw)


async def test_hostile_registration_bodies_never_fail_the_server(
    client: httpx.AsyncClient, db: DatabaseProbe
) -> None:
    for label, body in _cases(REGISTRATION):
        if label == "full_name=null":
            continue  # a legitimate value
        response = await client.post("/api/v1/users", content=body, headers=JSON)
        assert response.status_code == 422, (label, response.text[:300])
        assert_problem(response, 422)
    assert await db.scalar(select(func.count()).select_from(User)) == 0


async def test_hostile_product_bodies_never_fail_the_server(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    for label, body in _cases(PRODUCT):
        response = await client.post(
            "/api/v1/products", content=body, headers={**JSON, **user.headers}
        )
        # Nullable fields may legitimately be null; "1e-999" is 0 as a price.
        _problem_or_success(response, 201)
        if response.status_code == 201:
            assert label.endswith(("=null", "=tiny-float")), label
            deleted = await client.delete(response.headers["location"], headers=user.headers)
            assert deleted.status_code == 204
    assert await db.scalar(select(func.count()).select_from(Product)) == 0


async def test_hostile_patches_never_fail_the_server(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    created = await client.post(
        "/api/v1/products", json={"name": "Cup", "price": 2}, headers=user.headers
    )
    item = created.headers["location"]
    legitimate = {"description=null", "tax=null", "sku=null", "price=tiny-float", "tax=tiny-float"}
    for label, body in _cases(PRODUCT):
        response = await client.patch(item, content=body, headers={**JSON, **user.headers})
        _problem_or_success(response, 200)
        assert response.status_code != 200 or label in legitimate, label
    for label, body in _cases({"full_name": "x", "email": "a@example.com", "username": "alice"}):
        response = await client.patch(
            "/api/v1/users/me", content=body, headers={**JSON, **user.headers}
        )
        _problem_or_success(response, 200)
        assert response.status_code != 200 or label.startswith("full_name=null"), label
    stored = await db.scalar(select(Product))
    assert stored is not None
    assert stored.name == "Cup"


@pytest.mark.parametrize("path", ["/api/v1/auth/refresh", "/api/v1/auth/logout"])
async def test_hostile_refresh_tokens_never_fail_the_server(
    client: httpx.AsyncClient, path: str
) -> None:
    for label, raw in HOSTILE_JSON_VALUES.items():
        body = f'{{"refresh_token": {raw}}}'.encode()
        response = await client.post(path, content=body, headers=JSON)
        assert response.status_code in (401, 422), (label, response.text[:300])
        assert response.headers["content-type"] == "application/problem+json"


MALFORMED_JSON = dict(
    zip(
        [
            "open-brackets",
            "open-objects",
            "deep-balanced",
            "deep-in-field",
            "utf32-bom",
            "invalid-utf8",
            "utf8-bom",
            "empty",
            "null",
            "string",
            "number",
            "array",
            "duplicate-keys",
            "many-keys",
        ],
        [
            b"[" * 100_000,
            b'{"a":' * 50_000,
            b"[" * 20_000 + b"]" * 20_000,
            b'{"username": ' + b"[" * 100_000,
            b"\xff\xfe\x00\x00",
            b'{"username": "\xc3\x28"}',
            b'\xef\xbb\xbf{"username": "ivan"}',
            b"",
            b"null",
            b'"just a string"',
            b"12345",
            b"[]",
            b'{"username": "a", "username": "b"}',
            b"{" + b'"k": 1, ' * 10_000 + b'"z": 0}',
        ],
        strict=True,
    )
)


async def test_malformed_json_bodies_get_422(client: httpx.AsyncClient, db: DatabaseProbe) -> None:
    for label, body in MALFORMED_JSON.items():
        response = await client.post("/api/v1/users", content=body, headers=JSON)
        assert response.status_code == 422, (label, response.text[:300])
        problem = assert_problem(response, 422)
        assert all(set(error) == {"loc", "msg", "type"} for error in problem["errors"]), label
    assert await db.scalar(select(func.count()).select_from(User)) == 0


async def test_deeply_nested_json_to_a_protected_route_still_gets_401_first(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/api/v1/products", content=b"[" * 100_000, headers=JSON)
    assert_problem(response, 401)


async def test_deeply_nested_json_from_a_signed_in_user_gets_422(
    client: httpx.AsyncClient, user: Account
) -> None:
    response = await client.post(
        "/api/v1/products", content=b"[" * 100_000, headers={**JSON, **user.headers}
    )
    body = assert_problem(response, 422)
    assert ["body"] in [error["loc"] for error in body["errors"]]


HOSTILE_QUERIES = [
    "q=%00",
    "q=abc%00def",
    "q=%ED%A0%80",
    "q=%FF%FE",
    "q=%C3%28",
    "q=" + "a" * 20_000,
    "q=%27%20OR%201%3D1%20--",
    "q=%25%5F%5C",
    "sort=%00",
    "sort=" + "-" * 5000,
    "limit=%00",
    "limit=" + "9" * 5000,
    "limit=1e2",
    "offset=-0",
    "offset=99999999999999999999999999",
    "min_price=NaN",
    "min_price=Infinity",
    "min_price=-Infinity",
    "min_price=1e999999999",
    "max_price=1e-999999999",
    "min_price=" + "9" * 5000,
    "owner_id=1e3",
    "owner_id=0x10",
    "owner_id=" + "1" * 5000,
    "limit=1&limit=2&limit=%00",
    "%00=%00",
    "&&&=&=",
]


async def test_hostile_query_strings_never_fail_the_server(client: httpx.AsyncClient) -> None:
    for query in HOSTILE_QUERIES:
        response = await client.get(f"/api/v1/products?{query}")
        assert response.status_code < 500, query[:100]
        _problem_or_success(response, 200)
        if response.status_code == 200:
            assert response.json()["items"] == []


async def test_sql_in_a_query_is_just_text(client: httpx.AsyncClient, user: Account) -> None:
    name = "Robert'); DROP TABLE products;--"
    created = await client.post(
        "/api/v1/products", json={"name": name, "price": 1}, headers=user.headers
    )
    assert created.status_code == 201
    response = await client.get("/api/v1/products", params={"q": "'); DROP TABLE"})
    assert response.status_code == 200
    assert [item["name"] for item in response.json()["items"]] == [name]
    wildcard = await client.get("/api/v1/products", params={"q": "%"})
    assert wildcard.json()["total"] == 0


HOSTILE_FORMS = [
    b"username=%00&password=x",
    b"username=alice&password=%00",
    b"username=%ED%A0%80&password=correct+horse+battery",
    b"username=%FF%FE&password=%C3%28",
    b"username=" + b"a" * 200_000 + b"&password=x",
    b"username=alice&password=" + b"p" * 200_000,
    b"username=alice&password=x&grant_type=%00",
    b"username=alice&username=bob&password=x",
    b"username&password",
    b"&&&&",
    b"=",
    b"%",
    b"username=alice&password=x&" + b"k=v&" * 5_000,
]


async def test_hostile_login_forms_never_fail_the_server(
    client: httpx.AsyncClient, user: Account
) -> None:
    for form in HOSTILE_FORMS:
        response = await client.post("/api/v1/auth/token", content=form, headers=FORM)
        assert response.status_code in (400, 413, 422), (form[:80], response.text[:300])
        assert response.headers["content-type"] == "application/problem+json"
        assert "access_token" not in response.text


ODD_TOKEN_ENCODINGS = [
    (b"--x\r\nContent-Disposition: form-data\r\n\r\n", "multipart/form-data; boundary=x"),
    (b"garbage", "multipart/form-data"),
    (b"garbage", "multipart/form-data; boundary="),
    (b'{"username": "alice", "password": "x"}', "application/json"),
    (b"username=alice&password=x", "text/plain"),
    (b"username=alice&password=x", "application/x-www-form-urlencoded; charset=bogus"),
]


async def test_odd_token_request_encodings_never_fail_the_server(
    client: httpx.AsyncClient,
) -> None:
    for content, content_type in ODD_TOKEN_ENCODINGS:
        response = await client.post(
            "/api/v1/auth/token", content=content, headers={"Content-Type": content_type}
        )
        assert 400 <= response.status_code < 500, (content_type, response.text[:300])
        assert response.headers["content-type"] == "application/problem+json"


HOSTILE_AUTHORIZATIONS = [
    b"Bearer",
    b"Bearer ",
    b"Bearer \xff\xfe",
    b"Bearer " + b"a" * 8000,
    b"Bearer a.b.c",
    b"Bearer " + b".".join([b"e30"] * 3),
    b"Basic YWxpY2U6cGFzc3dvcmQ=",
    b"bearer\tx",
    b"\xc3\xa9",
]


async def test_hostile_authorization_headers_get_401(client: httpx.AsyncClient) -> None:
    for authorization in HOSTILE_AUTHORIZATIONS:
        response = await client.get("/api/v1/users/me", headers={"Authorization": authorization})
        assert response.status_code == 401, authorization[:80]
        assert_problem(response, 401)


HOSTILE_ENTITY_TAGS = [
    b'"' * 1000,
    b"W/",
    b'"\xff"',
    b'"2", "' + b"9" * 5000 + b'"',
    b'"-1"',
    b'"1\x7f"',
    b'"1',
]


async def test_hostile_entity_tags_never_change_anything(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    created = await client.post(
        "/api/v1/products", json={"name": "Cup", "price": 2}, headers=user.headers
    )
    item = created.headers["location"]
    for header in HOSTILE_ENTITY_TAGS:
        read = await client.get(item, headers={"If-None-Match": header})
        assert read.status_code == 200, header[:80]
        changed = await client.patch(
            item, json={"name": "Bowl"}, headers={**user.headers, "If-Match": header}
        )
        # None of these is the current tag "1": the change is refused.
        assert_problem(changed, 412)
    stored = await db.scalar(select(Product))
    assert stored is not None
    assert (stored.name, stored.version) == ("Cup", 1)


async def test_unusual_but_legitimate_text_is_stored_verbatim(
    client: httpx.AsyncClient, user: Account
) -> None:
    # Emoji (a surrogate pair in JSON), right-to-left override, zero-width
    # joiner, combining marks, a private-use character and U+FFFF.
    name = "Cup \U0001f680 \u202eabc\u202c \u200d e\u0301 \ue000 \uffff"
    description = "line one\nline two\ttabbed\r\n" + "\u00e9" * 4000
    body = json.dumps({"name": name, "description": description, "price": 1}).encode()
    created = await client.post("/api/v1/products", content=body, headers={**JSON, **user.headers})
    assert created.status_code == 201, created.text
    read = await client.get(created.headers["location"])
    assert read.json()["name"] == name
    assert read.json()["description"] == description
    found = await client.get("/api/v1/products", params={"q": "\U0001f680"})
    assert found.json()["total"] == 1
