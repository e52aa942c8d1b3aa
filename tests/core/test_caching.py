"""Caching headers (API.md 1.1, General): no HTTP cache ever serves a stale copy (RFC 9111).

A product and the product list may be stored but must be revalidated
(`no-cache`, with an ETag; `If-None-Match` gets 304); the list's validator is
made from the page itself, so every worker agrees on it and it changes with
the page or its total. Nothing may be stored (`no-store`) for a request with
credentials, a token response, or an error.
"""

import re

import httpx
import pytest
from fastapi import FastAPI

from app.core.config import Settings
from tests.support import Account, assert_problem, bearer, client_for

PRODUCTS = "/api/v1/products"


async def create(client: httpx.AsyncClient, owner: Account, name: str, price: str = "5.00") -> int:
    response = await client.post(
        PRODUCTS, json={"name": name, "price": price}, headers=owner.headers
    )
    assert response.status_code == 201
    product_id: int = response.json()["id"]
    return product_id


async def test_a_product_and_its_304_must_be_revalidated(
    client: httpx.AsyncClient, user: Account
) -> None:
    product_id = await create(client, user, "Mug")

    read = await client.get(f"{PRODUCTS}/{product_id}")
    not_modified = await client.get(
        f"{PRODUCTS}/{product_id}", headers={"If-None-Match": read.headers["etag"]}
    )

    assert read.headers["cache-control"] == "no-cache"
    assert not_modified.status_code == 304
    assert not_modified.headers["cache-control"] == "no-cache"
    assert not_modified.headers["etag"] == read.headers["etag"]


async def test_the_list_has_a_validator_and_answers_304(
    client: httpx.AsyncClient, user: Account
) -> None:
    await create(client, user, "Mug")
    page = await client.get(PRODUCTS)
    tag = page.headers["etag"]

    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-cache"
    assert re.fullmatch(r'"[0-9a-f]{32}"', tag), tag
    for header in (tag, f"W/{tag}", f'"other", {tag}', "*"):
        again = await client.get(PRODUCTS, headers={"If-None-Match": header})
        assert again.status_code == 304, header
        assert again.content == b""
        assert again.headers["etag"] == tag
        assert again.headers["cache-control"] == "no-cache"
    stale = await client.get(PRODUCTS, headers={"If-None-Match": '"not-this-one"'})
    assert stale.status_code == 200
    assert stale.json() == page.json()


async def test_the_list_validator_changes_with_the_page_and_its_total(
    client: httpx.AsyncClient, user: Account
) -> None:
    first = await create(client, user, "Mug")
    second = await create(client, user, "Cup")

    async def tag(query: str = "?limit=1") -> str:
        return (await client.get(PRODUCTS + query)).headers["etag"]

    start = await tag()
    assert await tag() == start  # nothing changed
    assert await tag("?limit=2") != start  # another page
    await create(client, user, "Bowl")
    after_create = await tag()
    assert after_create != start  # the first page is the same; its total is not
    patched = await client.patch(
        f"{PRODUCTS}/{first}", json={"price": "6.00"}, headers=user.headers
    )
    assert patched.status_code == 200
    after_update = await tag()
    assert after_update != after_create
    deleted = await client.delete(f"{PRODUCTS}/{second}", headers=user.headers)
    assert deleted.status_code == 204
    assert await tag() != after_update


async def test_every_worker_makes_the_same_validator(
    client: httpx.AsyncClient, user: Account, settings: Settings
) -> None:
    await create(client, user, "Mug")
    async with client_for(settings) as (_, other):  # another process's app, same database
        for query in ("", "?sort=-price&limit=5", "?q=mug"):
            ours = await client.get(PRODUCTS + query)
            theirs = await other.get(PRODUCTS + query)
            assert ours.headers["etag"] == theirs.headers["etag"], query


@pytest.mark.parametrize("token", ["valid", "garbage"])
async def test_nothing_asked_with_credentials_is_stored(
    client: httpx.AsyncClient, user: Account, token: str
) -> None:
    product_id = await create(client, user, "Mug")
    headers = user.headers if token == "valid" else bearer("garbage")

    for path in (PRODUCTS, f"{PRODUCTS}/{product_id}", "/api/v1/users/me", "/health/live"):
        response = await client.get(path, headers=headers)
        assert response.headers["cache-control"] == "no-store", path


async def test_no_error_is_stored(app: FastAPI, client: httpx.AsyncClient) -> None:
    errors = [
        await client.get(f"{PRODUCTS}/999"),
        await client.get(f"{PRODUCTS}?limit=0"),
        await client.get("/api/v1/users/me"),
        await client.delete("/health/live"),
        await client.get("/nowhere"),
        await client.post(PRODUCTS, content=b"x" * (app.state.settings.max_body_bytes + 1)),
        await client.post("/api/v1/auth/token", data={"username": "a", "password": "b"}),
    ]
    for response in errors:
        assert response.status_code >= 400
        assert_problem(response, response.status_code)
        assert response.headers["cache-control"] == "no-store", response.request.url


async def test_a_refused_access_token_says_invalid_token(
    client: httpx.AsyncClient, user: Account
) -> None:
    refused = await client.get("/api/v1/users/me", headers=bearer("garbage"))
    missing = await client.get("/api/v1/users/me")

    assert refused.status_code == missing.status_code == 401
    assert refused.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert missing.headers["www-authenticate"] == "Bearer"
