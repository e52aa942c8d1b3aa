"""OWASP API1:2023 Broken Object Level Authorization, applied to this service.

Two kinds of object are addressed by an id in the path: products
(`/api/v1/products/{product_id}`) and user accounts (`/api/v1/users/{user_id}`).
Ids are small sequential integers, so the threat is a signed-in client who
simply swaps in the id of an object that is not theirs.

The defence, as API.md states it: products are public to read, but PUT,
PATCH and DELETE load the product and allow the change only to its owner or
an admin (403 otherwise, nothing written); every `/users/{user_id}` route is
an admin route, so a normal user gets 403 for any account id, their own
included (a user reaches their own account through `/users/me`, which takes
no id). An admin may do everything.

`ID_ROUTES` says, for every route with an id in its path, what each kind of
caller gets. A test compares it with the routes `app.openapi()` declares, so
a new id route fails the suite until someone decides who may use it.
"""

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import httpx
import pytest
from fastapi import FastAPI

from app.products.models import Product
from app.users.models import User
from tests.security.common import create_product, operations, snapshot
from tests.support import Account, DatabaseProbe, assert_problem

Caller = Literal["anonymous", "owner", "stranger", "admin"]
CALLERS: tuple[Caller, ...] = ("anonymous", "owner", "stranger", "admin")

PRODUCT = "/api/v1/products/{product_id}"
USER = "/api/v1/users/{user_id}"


@dataclass(frozen=True)
class IdRoute:
    """What each caller gets on one route, for an object the "owner" owns.

    For a user account the owner is the account itself.
    """

    kind: Literal["product", "user"]
    expected: dict[Caller, int]
    body: dict[str, Any] | None = None


ID_ROUTES: dict[tuple[str, str], IdRoute] = {
    ("GET", PRODUCT): IdRoute(
        "product", {"anonymous": 200, "owner": 200, "stranger": 200, "admin": 200}
    ),
    ("PUT", PRODUCT): IdRoute(
        "product",
        {"anonymous": 401, "owner": 200, "stranger": 403, "admin": 200},
        body={"name": "Taken over", "price": "0.01"},
    ),
    ("PATCH", PRODUCT): IdRoute(
        "product",
        {"anonymous": 401, "owner": 200, "stranger": 403, "admin": 200},
        body={"price": "0.01"},
    ),
    ("DELETE", PRODUCT): IdRoute(
        "product", {"anonymous": 401, "owner": 204, "stranger": 403, "admin": 204}
    ),
    ("GET", USER): IdRoute("user", {"anonymous": 401, "owner": 403, "stranger": 403, "admin": 200}),
    ("PATCH", USER): IdRoute(
        "user",
        {"anonymous": 401, "owner": 403, "stranger": 403, "admin": 200},
        body={"full_name": "Taken over"},
    ),
    ("DELETE", USER): IdRoute(
        "user", {"anonymous": 401, "owner": 403, "stranger": 403, "admin": 204}
    ),
}


@dataclass
class World:
    owner: Account
    stranger: Account
    admin: Account
    product_id: int

    def headers(self, caller: Caller) -> dict[str, str]:
        if caller == "anonymous":
            return {}
        account: Account = getattr(self, caller)
        return account.headers

    def url(self, path: str, kind: str) -> str:
        target = self.product_id if kind == "product" else self.owner.id
        return path.replace("{product_id}", str(target)).replace("{user_id}", str(target))


@pytest.fixture
async def world(
    client: httpx.AsyncClient, user: Account, other_user: Account, admin: Account
) -> World:
    """Alice owns a product; Bob is another normal user; root is an admin."""
    product = await create_product(client, user, description="Porcelain", sku="CUP-1")
    return World(owner=user, stranger=other_user, admin=admin, product_id=product["id"])


async def call(
    client: httpx.AsyncClient, world: World, key: tuple[str, str], caller: Caller
) -> httpx.Response:
    method, path = key
    route = ID_ROUTES[key]
    return await client.request(
        method, world.url(path, route.kind), json=route.body, headers=world.headers(caller)
    )


async def test_the_table_covers_every_route_with_an_id_in_its_path(app: FastAPI) -> None:
    declared = {op.key for op in operations(app) if "{" in op.path}
    assert declared == set(ID_ROUTES), (
        "every route with a path id needs a row in ID_ROUTES saying who may use it"
    )


async def test_every_path_id_is_declared_a_positive_integer(app: FastAPI) -> None:
    for op in operations(app):
        for parameter in op.spec.get("parameters", []):
            if parameter["in"] == "path":
                assert parameter["schema"]["type"] == "integer", op.key
                assert parameter["schema"]["exclusiveMinimum"] == 0, op.key


@pytest.mark.parametrize("key", list(ID_ROUTES), ids=" ".join)
async def test_only_callers_with_rights_on_the_object_get_it_done(
    client: httpx.AsyncClient, db: DatabaseProbe, world: World, key: tuple[str, str]
) -> None:
    route = ID_ROUTES[key]
    refused = [c for c in CALLERS if route.expected[c] >= 400]
    allowed = [c for c in CALLERS if route.expected[c] < 400]

    for caller in refused:
        before = await snapshot(db)
        response = await call(client, world, key, caller)
        assert_problem(response, route.expected[caller])
        if caller == "anonymous":
            assert response.headers["www-authenticate"].startswith("Bearer")
        assert "Taken over" not in response.text
        assert await snapshot(db) == before, f"{caller} changed something"

    for caller in allowed:
        if route.kind == "product":  # a fresh product each time: a DELETE must find one
            world.product_id = (await create_product(client, world.owner))["id"]
        response = await call(client, world, key, caller)
        assert response.status_code == route.expected[caller], (caller, response.text)
        await assert_done(db, world, key, response)


async def assert_done(
    db: DatabaseProbe, world: World, key: tuple[str, str], response: httpx.Response
) -> None:
    """The database shows the change the route makes (or, for a read, the right object)."""
    method, path = key
    product = await db.get(Product, world.product_id)
    owner = await db.get(User, world.owner.id)
    if method == "GET":
        assert response.json()["id"] == (world.product_id if path == PRODUCT else world.owner.id)
    elif method == "DELETE" and path == PRODUCT:
        assert product is None
        assert owner is not None
    elif method == "DELETE":
        assert owner is None
        assert product is None  # a user's products go with the account
    elif path == PRODUCT:
        assert product is not None
        assert product.price == Decimal("0.01")
        assert product.owner_id == world.owner.id  # an admin's edit does not take ownership
        assert product.version == 2
        if method == "PUT":
            assert (product.name, product.description, product.sku) == ("Taken over", None, None)
    else:
        assert owner is not None
        assert owner.full_name == "Taken over"


async def test_knowing_the_current_etag_gives_a_stranger_no_rights(
    client: httpx.AsyncClient, db: DatabaseProbe, world: World
) -> None:
    url = world.url(PRODUCT, "product")
    etag = (await client.get(url)).headers["etag"]
    before = await snapshot(db)

    for method, body in (("PATCH", {"price": "0.01"}), ("DELETE", None)):
        response = await client.request(
            method, url, json=body, headers={**world.stranger.headers, "If-Match": etag}
        )
        assert_problem(response, 403)

    assert await snapshot(db) == before


async def test_a_user_id_in_the_query_does_not_redirect_the_me_routes(
    app: FastAPI, client: httpx.AsyncClient, db: DatabaseProbe, world: World
) -> None:
    """`/users/me` always means the token's own account; nothing in the request can retarget it."""
    me_routes = [op for op in operations(app) if "/me" in op.path]
    assert me_routes
    assert all(not op.path_parameters for op in me_routes)
    query = {"user_id": world.stranger.id, "id": world.stranger.id}

    read = await client.get("/api/v1/users/me", params=query, headers=world.owner.headers)
    changed = await client.patch(
        "/api/v1/users/me", params=query, json={"full_name": "Alice"}, headers=world.owner.headers
    )

    assert read.json()["id"] == world.owner.id
    assert changed.json()["id"] == world.owner.id
    stranger = await db.get(User, world.stranger.id)
    assert stranger is not None
    assert stranger.full_name is None
