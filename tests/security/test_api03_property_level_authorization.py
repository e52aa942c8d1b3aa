"""OWASP API3:2023 Broken Object Property Level Authorization, applied to this service.

Two halves. Writing: a client who may change an object must still not set
the properties the server owns. Here those are a user's `role`,
`is_active`, `email_verified`, `id`, timestamps, `password_hash` and
`token_version`, and a
product's `id`, `owner_id`, `version` and timestamps. The threat is mass
assignment: adding `"role": "admin"` to a registration, `"owner_id"` to a
product update. The defence: every JSON body is a Pydantic model that
forbids unknown fields (422 naming the field, nothing stored), the models
list only what API.md lets a client send, and the owner, version and
timestamps are set by the service. Only the admin's `PATCH
/api/v1/users/{user_id}` also takes `role` and `is_active`, as API.md says.

Reading: a response must show no property the caller should not see. The
defence: responses go through separate read models holding exactly
API.md's field lists, so the stored password hash and token version have
no way out. Both the models the OpenAPI document declares and real
responses are checked key by key.

`WRITE_ROUTES` lists every operation with a request body; a test compares it
with `app.openapi()`, so a new write route must say what it accepts.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.account.models import TokenPurpose
from app.products.models import Product
from app.users.models import User
from tests.auth.helpers import claims_of
from tests.security.common import (
    PAGE_FIELDS,
    PRODUCT_FIELDS,
    SERVER_OWNED_FIELDS,
    TOKEN_PAIR_FIELDS,
    USER_FIELDS,
    create_product,
    operations,
    resolve,
    schema_name,
    snapshot,
)
from tests.support import (
    Account,
    DatabaseProbe,
    assert_problem,
    error_locations,
    login,
    mint_token,
)

PRODUCT_INPUT = frozenset({"name", "description", "price", "tax", "sku"})
NEW_PASSWORD = "another long passphrase"


@dataclass
class World:
    user: Account
    admin: Account
    product_id: int
    verification_token: str
    reset_token: str


@dataclass(frozen=True)
class WriteRoute:
    caller: Literal["anonymous", "user", "admin"]
    accepts: frozenset[str]
    body: Callable[[World], dict[str, Any]]


WRITE_ROUTES: dict[tuple[str, str], WriteRoute] = {
    ("POST", "/api/v1/users"): WriteRoute(
        "anonymous",
        frozenset({"username", "email", "password", "full_name"}),
        lambda w: {
            "username": "mallory",
            "email": "mallory@example.com",
            "password": "correct horse battery",
        },
    ),
    ("PATCH", "/api/v1/users/me"): WriteRoute(
        "user", frozenset({"username", "email", "full_name"}), lambda w: {"full_name": "Alice"}
    ),
    ("POST", "/api/v1/users/me/password"): WriteRoute(
        "user",
        frozenset({"current_password", "new_password"}),
        lambda w: {"current_password": w.user.password, "new_password": NEW_PASSWORD},
    ),
    ("PATCH", "/api/v1/users/{user_id}"): WriteRoute(
        "admin",
        frozenset({"username", "email", "full_name", "role", "is_active"}),
        lambda w: {"full_name": "Alice"},
    ),
    ("POST", "/api/v1/products"): WriteRoute(
        "user", PRODUCT_INPUT, lambda w: {"name": "Mug", "price": "3.00"}
    ),
    ("PUT", "/api/v1/products/{product_id}"): WriteRoute(
        "user", PRODUCT_INPUT, lambda w: {"name": "Mug", "price": "3.00"}
    ),
    ("PATCH", "/api/v1/products/{product_id}"): WriteRoute(
        "user", PRODUCT_INPUT, lambda w: {"price": "3.00"}
    ),
    ("POST", "/api/v1/auth/refresh"): WriteRoute(
        "anonymous", frozenset({"refresh_token"}), lambda w: {"refresh_token": w.user.refresh_token}
    ),
    ("POST", "/api/v1/auth/logout"): WriteRoute(
        "anonymous", frozenset({"refresh_token"}), lambda w: {"refresh_token": w.user.refresh_token}
    ),
    ("POST", "/api/v1/auth/verify-email"): WriteRoute(
        "anonymous", frozenset({"token"}), lambda w: {"token": w.verification_token}
    ),
    ("POST", "/api/v1/auth/password-reset"): WriteRoute(
        "anonymous", frozenset({"email"}), lambda w: {"email": w.user.email}
    ),
    ("POST", "/api/v1/auth/password-reset/confirm"): WriteRoute(
        "anonymous",
        frozenset({"token", "new_password"}),
        lambda w: {"token": w.reset_token, "new_password": NEW_PASSWORD},
    ),
}
# The OAuth2 form: RFC 6749 lets clients add parameters, which are ignored.
FORM_ROUTES = {("POST", "/api/v1/auth/token")}

SMUGGLED: dict[str, Any] = {
    "role": "admin",
    "is_active": False,
    "id": 4242,
    "owner_id": 4242,
    "version": 99,
    "created_at": "2001-01-01T00:00:00Z",
    "updated_at": "2001-01-01T00:00:00Z",
    "password_hash": "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
    "token_version": 0,
    "email_verified": True,
}
assert set(SMUGGLED) == set(SERVER_OWNED_FIELDS)

PROBLEM_FIELDS = frozenset({"type", "title", "status", "detail", "instance", "request_id"})
# Every model a response may use, with exactly its properties.
RESPONSE_MODELS: dict[str, frozenset[str]] = {
    "UserRead": USER_FIELDS,
    "UserPage": PAGE_FIELDS,
    "ProductRead": PRODUCT_FIELDS,
    "ProductPage": PAGE_FIELDS,
    "TokenPairRead": TOKEN_PAIR_FIELDS,
    "HealthRead": frozenset({"status"}),
    "ReadinessRead": frozenset({"status", "schema_revision", "read_replica"}),
    "Problem": PROBLEM_FIELDS,
    "ValidationProblem": PROBLEM_FIELDS | {"errors"},
    "ValidationIssue": frozenset({"loc", "msg", "type"}),
    "OAuth2Problem": PROBLEM_FIELDS | {"error", "error_description"},
    "Accepted": frozenset({"detail"}),
}
PAGE_ITEMS = {"UserPage": "UserRead", "ProductPage": "ProductRead"}


@pytest.fixture
async def world(app: FastAPI, client: httpx.AsyncClient, user: Account, admin: Account) -> World:
    product = await create_product(client, user)
    return World(
        user=user,
        admin=admin,
        product_id=product["id"],
        verification_token=await mint_token(app, user.id, user.email, TokenPurpose.VERIFY_EMAIL),
        reset_token=await mint_token(app, user.id, user.email, TokenPurpose.PASSWORD_RESET),
    )


def url_of(path: str, world: World) -> str:
    return path.replace("{user_id}", str(world.user.id)).replace(
        "{product_id}", str(world.product_id)
    )


def headers_of(route: WriteRoute, world: World) -> dict[str, str]:
    return {"anonymous": {}, "user": world.user.headers, "admin": world.admin.headers}[route.caller]


def component_names(document: dict[str, Any], schema: dict[str, Any]) -> set[str]:
    """Names of every component `schema` refers to, directly or through others."""
    names: set[str] = set()
    pending = [schema]
    while pending:
        current = pending.pop()
        if "$ref" in current:
            name = schema_name(current)
            if name in names:
                continue
            names.add(name)
            current = resolve(document, current)
        pending.extend(current.get("properties", {}).values())
        if isinstance(current.get("items"), dict):
            pending.append(current["items"])
        for key in ("anyOf", "oneOf", "allOf"):
            pending.extend(current.get(key, []))
    return names


# Writing --------------------------------------------------------------------


async def test_every_operation_with_a_body_says_what_it_accepts(app: FastAPI) -> None:
    document = app.openapi()
    json_bodies, forms = set(), set()
    for op in operations(app):
        content = op.spec.get("requestBody", {}).get("content", {})
        if "application/json" in content:
            json_bodies.add(op.key)
            schema = resolve(document, content["application/json"]["schema"])
            assert schema.get("additionalProperties") is False, op.key
            assert set(schema["properties"]) == WRITE_ROUTES[op.key].accepts, op.key
        elif content:
            forms.add(op.key)
    assert json_bodies == set(WRITE_ROUTES)
    assert forms == FORM_ROUTES


@pytest.mark.parametrize("key", list(WRITE_ROUTES), ids=" ".join)
async def test_no_write_route_lets_a_client_set_what_the_server_owns(
    client: httpx.AsyncClient, db: DatabaseProbe, world: World, key: tuple[str, str]
) -> None:
    method, path = key
    route = WRITE_ROUTES[key]
    refused = [f for f in SERVER_OWNED_FIELDS if f not in route.accepts]
    assert refused

    for field in refused:
        before = await snapshot(db)
        body = {**route.body(world), field: SMUGGLED[field]}
        response = await client.request(
            method, url_of(path, world), json=body, headers=headers_of(route, world)
        )
        assert_problem(response, 422)
        assert error_locations(response) == [["body", field]], field
        assert await snapshot(db) == before, f"sending {field} changed something"

    # The same body without the smuggled field is fine: the field was the problem.
    response = await client.request(
        method, url_of(path, world), json=route.body(world), headers=headers_of(route, world)
    )
    assert response.status_code < 300, response.text


LOOK_ALIKES = ("Role", "ROLE", "role ", "isActive", "is-active", "owner", "ownerId", "_id")


async def test_look_alike_field_names_are_refused_too(
    client: httpx.AsyncClient, db: DatabaseProbe, world: World
) -> None:
    before = await snapshot(db)
    product = f"/api/v1/products/{world.product_id}"
    attempts = [
        ("POST", "/api/v1/users", WRITE_ROUTES[("POST", "/api/v1/users")].body(world), {}),
        ("PATCH", "/api/v1/users/me", {}, world.user.headers),
        ("PUT", product, {"name": "Mug", "price": 3}, world.user.headers),
    ]
    for field in LOOK_ALIKES:
        for method, url, body, headers in attempts:
            response = await client.request(
                method, url, json={**body, field: "admin"}, headers=headers
            )
            assert_problem(response, 422)
            assert error_locations(response) == [["body", field]], (field, method, url)
    assert await snapshot(db) == before


async def test_a_server_owned_field_nested_in_an_allowed_one_is_refused(
    client: httpx.AsyncClient, db: DatabaseProbe, world: World
) -> None:
    before = await snapshot(db)
    response = await client.patch(
        "/api/v1/users/me", json={"full_name": {"role": "admin"}}, headers=world.user.headers
    )
    assert_problem(response, 422)
    assert await snapshot(db) == before


async def test_server_owned_fields_in_the_query_string_are_ignored(
    client: httpx.AsyncClient, db: DatabaseProbe, world: World
) -> None:
    smuggled = {"role": "admin", "is_active": "false", "owner_id": world.admin.id, "version": 9}

    registered = await client.post(
        "/api/v1/users",
        params=smuggled,
        json={"username": "mallory", "email": "mallory@example.com", "password": "long enough!"},
    )
    created = await client.post(
        "/api/v1/products",
        params=smuggled,
        json={"name": "Mug", "price": "3.00"},
        headers=world.user.headers,
    )
    patched = await client.patch(
        "/api/v1/users/me", params=smuggled, json={}, headers=world.user.headers
    )

    assert registered.status_code == 201, registered.text
    assert (registered.json()["role"], registered.json()["is_active"]) == ("user", True)
    assert created.status_code == 201, created.text
    assert (created.json()["owner_id"], created.json()["version"]) == (world.user.id, 1)
    assert patched.json()["role"] == "user"
    roles = await db.all(select(User.role).order_by(User.id))
    assert [str(r) for r in roles] == ["user", "admin", "user"]  # alice, root, mallory
    product = await db.get(Product, created.json()["id"])
    assert product is not None
    assert product.owner_id == world.user.id


async def test_extra_token_form_fields_grant_nothing(
    client: httpx.AsyncClient, db: DatabaseProbe, world: World
) -> None:
    users_before = (await snapshot(db))["users"]

    response = await client.post(
        "/api/v1/auth/token",
        data={
            "username": world.user.username,
            "password": world.user.password,
            "role": "admin",
            "scope": "admin",
            "is_active": "true",
        },
    )

    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert "role" not in claims_of(token)
    me = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["role"] == "user"
    assert (await snapshot(db))["users"] == users_before


async def test_an_admin_may_set_role_and_active_flag_and_nothing_else_the_server_owns(
    client: httpx.AsyncClient, db: DatabaseProbe, world: World
) -> None:
    response = await client.patch(
        f"/api/v1/users/{world.user.id}",
        json={"role": "admin", "is_active": False},
        headers=world.admin.headers,
    )

    assert response.status_code == 200, response.text
    assert (response.json()["role"], response.json()["is_active"]) == ("admin", False)
    stored = await db.get(User, world.user.id)
    assert stored is not None
    assert (str(stored.role), stored.is_active) == ("admin", False)


# Reading --------------------------------------------------------------------


async def test_every_response_model_in_the_document_has_exactly_the_listed_fields(
    app: FastAPI,
) -> None:
    document = app.openapi()
    used: set[str] = set()
    for op in operations(app):
        for status, response in op.spec["responses"].items():
            for media_type, content in response.get("content", {}).items():
                schema = content.get("schema", {})
                if media_type.startswith(("text/plain", "text/event-stream")):  # /metrics, events
                    assert schema == {"type": "string"}, (op.key, status)
                    continue
                assert "$ref" in schema, (op.key, status, "an inline response schema")
                used |= component_names(document, schema)
    used.discard("Role")  # the enum of `role`, not an object
    assert used == set(RESPONSE_MODELS)
    schemas = document["components"]["schemas"]
    for name, fields in RESPONSE_MODELS.items():
        assert set(schemas[name]["properties"]) == fields, name
    for page, item in PAGE_ITEMS.items():
        assert schema_name(schemas[page]["properties"]["items"]["items"]) == item


async def test_no_schema_in_the_document_mentions_a_hash_or_token_version(app: FastAPI) -> None:
    document = app.openapi()
    for name, schema in document["components"]["schemas"].items():
        for prop in schema.get("properties", {}):
            assert "hash" not in prop.lower(), (name, prop)
            assert prop != "token_version", (name, prop)
            if name in RESPONSE_MODELS:
                assert "password" not in prop.lower(), (name, prop)


def assert_clean(response: httpx.Response, fields: frozenset[str]) -> dict[str, Any]:
    """Exactly `fields`, and no value that looks like a password, a hash or a token version."""
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    assert set(body) == fields, response.request.url
    if fields != TOKEN_PAIR_FIELDS:  # tokens are base64: any word may turn up by chance
        text = response.text.lower()
        for secret in ("$argon2", "password", "hash", "token_version"):
            assert secret not in text, (response.request.url, secret)
    return body


async def test_real_responses_carry_exactly_the_listed_fields(
    client: httpx.AsyncClient, world: World
) -> None:
    user, admin = world.user.headers, world.admin.headers
    product = f"/api/v1/products/{world.product_id}"
    registered = await client.post(
        "/api/v1/users",
        json={"username": "mallory", "email": "mallory@example.com", "password": "long enough!"},
    )
    assert_clean(registered, USER_FIELDS)
    assert_clean(await client.get("/api/v1/users/me", headers=user), USER_FIELDS)
    assert_clean(
        await client.patch("/api/v1/users/me", json={"full_name": "A"}, headers=user), USER_FIELDS
    )
    assert_clean(await client.get(f"/api/v1/users/{world.user.id}", headers=admin), USER_FIELDS)
    assert_clean(
        await client.patch(f"/api/v1/users/{world.user.id}", json={}, headers=admin), USER_FIELDS
    )
    users = assert_clean(await client.get("/api/v1/users", headers=admin), PAGE_FIELDS)
    assert len(users["items"]) == 3
    assert all(set(item) == USER_FIELDS for item in users["items"])

    created = await client.post("/api/v1/products", json={"name": "Mug", "price": 3}, headers=user)
    assert_clean(created, PRODUCT_FIELDS)
    assert_clean(await client.get(product), PRODUCT_FIELDS)
    assert_clean(
        await client.put(product, json={"name": "Cup", "price": 2}, headers=user), PRODUCT_FIELDS
    )
    assert_clean(await client.patch(product, json={"price": 4}, headers=admin), PRODUCT_FIELDS)
    products = assert_clean(await client.get("/api/v1/products"), PAGE_FIELDS)
    assert len(products["items"]) == 2
    assert all(set(item) == PRODUCT_FIELDS for item in products["items"])

    tokens = assert_clean(await login(client, "mallory", "long enough!"), TOKEN_PAIR_FIELDS)
    assert_clean(
        await client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}),
        TOKEN_PAIR_FIELDS,
    )
