"""API.md "General": paths. Resources live under /api/v1; a trailing slash changes nothing.

A path with a trailing slash is served exactly like the one without it, with
no redirect; path ids that are not positive integers get 422; unknown query
parameters are ignored.
"""

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.users.models import User
from tests.support import Account, DatabaseProbe, assert_problem, register


def _without_request_id(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k != "x-request-id"}


@pytest.mark.parametrize("path", ["/api/v1/products", "/health/live", "/openapi.json", "/docs"])
async def test_a_trailing_slash_serves_the_same_response(
    client: httpx.AsyncClient, path: str
) -> None:
    plain = await client.get(path)
    slashed = await client.get(path + "/")
    assert plain.status_code == 200
    assert slashed.status_code == 200
    assert slashed.content == plain.content
    assert _without_request_id(slashed) == _without_request_id(plain)


async def test_registration_with_a_trailing_slash_creates_the_user(
    client: httpx.AsyncClient, db: DatabaseProbe
) -> None:
    response = await client.post(
        "/api/v1/users/",
        json={"username": "erin", "email": "erin@example.com", "password": "correct horse"},
    )
    assert response.status_code == 201, response.text
    stored = await db.scalar(select(User).where(User.username == "erin"))
    assert stored is not None
    assert response.headers["location"] == f"/api/v1/users/{stored.id}"


async def test_every_method_works_with_a_trailing_slash(
    client: httpx.AsyncClient, user: Account
) -> None:
    created = await client.post(
        "/api/v1/products/", json={"name": "Mug", "price": 4}, headers=user.headers
    )
    assert created.status_code == 201, created.text
    item = f"/api/v1/products/{created.json()['id']}/"

    read = await client.get(item)
    assert read.status_code == 200
    assert read.headers["etag"] == '"1"'

    patched = await client.patch(
        item, json={"price": "5.25"}, headers={**user.headers, "If-Match": '"1"'}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["price"] == 5.25

    replaced = await client.put(item, json={"name": "Big mug", "price": 6}, headers=user.headers)
    assert replaced.status_code == 200
    assert replaced.json()["version"] == 3

    me = await client.patch("/api/v1/users/me/", json={"full_name": "Alice"}, headers=user.headers)
    assert me.status_code == 200
    assert me.json()["full_name"] == "Alice"

    deleted = await client.delete(item, headers=user.headers)
    assert deleted.status_code == 204
    assert (await client.get(item)).status_code == 404


async def test_errors_with_a_trailing_slash_are_not_redirects(client: httpx.AsyncClient) -> None:
    for method, path, status in [
        ("GET", "/api/v1/users/me/", 401),
        ("GET", "/api/v1/products/999/", 404),
        ("DELETE", "/api/v1/products/", 405),
        ("GET", "/api/v1/nothing/", 404),
    ]:
        response = await client.request(method, path)
        assert response.status_code == status, (method, path)
        assert response.headers["content-type"] == "application/problem+json"
        assert "location" not in response.headers


async def test_the_token_endpoint_accepts_a_trailing_slash(
    client: httpx.AsyncClient, user: Account
) -> None:
    response = await client.post(
        "/api/v1/auth/token/", data={"username": user.username, "password": user.password}
    )
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "bearer"


async def test_no_path_answers_with_a_redirect(client: httpx.AsyncClient) -> None:
    for path in ("/api/v1/products/", "/api/v1/products//", "/health/ready/", "/redoc/", "/docs/"):
        response = await client.get(path)
        assert not 300 <= response.status_code < 400, (path, response.status_code)


async def test_every_resource_path_is_under_api_v1(app: FastAPI) -> None:
    paths = app.openapi()["paths"]
    assert paths
    # Resources live under /api/v1; the operational endpoints (health probes
    # and Prometheus' /metrics) do not, like the docs.
    operational = ("/health/", "/metrics")
    for path in paths:
        assert path.startswith(("/api/v1/", *operational)), path
    resource_paths = [p for p in paths if not p.startswith(operational)]
    assert {p.split("/")[3] for p in resource_paths} == {"auth", "users", "products"}


async def test_resources_are_not_served_without_the_prefix(client: httpx.AsyncClient) -> None:
    for path in ("/products", "/users/me", "/auth/token", "/api/products", "/api/v2/products"):
        response = await client.get(path)
        assert_problem(response, 404)


@pytest.mark.parametrize("bad_id", ["0", "-1", "abc", "1.5", "1e3", "9223372036854775808", "%20"])
async def test_a_path_id_that_is_not_a_positive_integer_gets_422(
    client: httpx.AsyncClient, bad_id: str
) -> None:
    response = await client.get(f"/api/v1/products/{bad_id}")
    body = assert_problem(response, 422)
    assert [error["loc"] for error in body["errors"]] == [["path", "product_id"]]


async def test_unknown_query_parameters_are_ignored(
    client: httpx.AsyncClient, user: Account
) -> None:
    plain = await client.get("/api/v1/products")
    with_extra = await client.get("/api/v1/products?colour=red&limit=20&debug=1")
    assert with_extra.status_code == 200
    assert with_extra.json() == plain.json()
    me = await client.get("/api/v1/users/me?verbose=yes", headers=user.headers)
    assert me.status_code == 200


async def test_registration_path_is_the_same_with_or_without_slash(
    client: httpx.AsyncClient,
) -> None:
    first = await register(client, "frank")
    assert first.status_code == 201
    duplicate = await client.post(
        "/api/v1/users/",
        json={"username": "FRANK", "email": "other@example.com", "password": "correct horse"},
    )
    assert_problem(duplicate, 409)


@pytest.mark.parametrize("path", ["/health/live", "/api/v1/products", "/docs"])
async def test_head_is_answered_like_get_without_a_body(
    client: httpx.AsyncClient, path: str
) -> None:
    get = await client.get(path)
    head = await client.head(path)
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["content-length"] == get.headers["content-length"]
    assert head.headers["x-request-id"]


async def test_head_on_a_product_carries_its_etag(client: httpx.AsyncClient, user: Account) -> None:
    created = await client.post(
        "/api/v1/products", json={"name": "Mug", "price": 4}, headers=user.headers
    )
    head = await client.head(created.headers["location"])
    assert head.status_code == 200
    assert head.headers["etag"] == '"1"'
    assert head.content == b""


async def test_allow_names_head_wherever_get_is_served(client: httpx.AsyncClient) -> None:
    response = await client.put("/api/v1/products")
    assert response.status_code == 405
    assert [m.strip() for m in response.headers["allow"].split(",")] == ["GET", "HEAD", "POST"]
