"""API.md "General": `X-Request-ID` on every response, echoed or generated, and in the log lines.

An incoming id of 1 to 64 characters of `[A-Za-z0-9._-]` is echoed; any
other value is replaced by a generated one. The id is on every response,
errors included, and on every log line written while serving the request.
"""

import asyncio
import re

import httpx
import pytest
from fastapi import FastAPI

from tests.core.conftest import ClientFactory, LogLines
from tests.support import Account

VALID_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


@pytest.mark.parametrize(
    "incoming",
    ["a", "0", "x" * 64, "abc.DEF_123-xyz", "6f1c0b6e-4a7d-4c1e-9f0e-2b1d3c4e5f60", "...", "-_-"],
)
async def test_a_well_formed_request_id_is_echoed(client: httpx.AsyncClient, incoming: str) -> None:
    response = await client.get("/health/live", headers={"X-Request-ID": incoming})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == incoming


@pytest.mark.parametrize(
    "incoming",
    [
        b"",
        b"x" * 65,
        b"has space",
        b"a/b",
        b"a,b",
        b"semi;colon",
        b'quote"d',
        "caf\u00e9".encode(),
        "\u6f22\u5b57".encode(),
        b"tab\there",
    ],
    ids=[
        "empty",
        "65-chars",
        "space",
        "slash",
        "comma",
        "semicolon",
        "quote",
        "latin1-accent",
        "cjk",
        "tab",
    ],
)
async def test_a_malformed_request_id_is_replaced(
    client: httpx.AsyncClient, incoming: bytes
) -> None:
    response = await client.get("/health/live", headers={"X-Request-ID": incoming})
    assert response.status_code == 200
    generated = response.headers["x-request-id"]
    assert generated.encode() != incoming
    assert VALID_ID.fullmatch(generated)
    assert response.headers.get_list("x-request-id") == [generated]


async def test_without_an_id_each_request_gets_a_new_one(client: httpx.AsyncClient) -> None:
    ids = {(await client.get("/health/live")).headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5
    assert all(VALID_ID.fullmatch(request_id) for request_id in ids)


async def test_every_kind_of_response_carries_the_request_id(
    client: httpx.AsyncClient, app: FastAPI, user: Account
) -> None:
    async def explode() -> dict[str, str]:
        raise RuntimeError("boom")

    app.add_api_route("/test-only/explode", explode)
    product = await client.post(
        "/api/v1/products", json={"name": "Cup", "price": "3.50"}, headers=user.headers
    )
    assert product.status_code == 201
    etag = product.headers["etag"]
    location = product.headers["location"]

    requests = [
        (200, client.build_request("GET", "/health/live")),
        (200, client.build_request("GET", "/health/ready")),
        (200, client.build_request("GET", location)),
        (304, client.build_request("GET", location, headers={"If-None-Match": etag})),
        (
            204,
            client.build_request(
                "POST", "/api/v1/auth/logout", json={"refresh_token": user.refresh_token}
            ),
        ),
        (401, client.build_request("GET", "/api/v1/users/me")),
        (
            400,
            client.build_request(
                "POST", "/api/v1/auth/token", data={"username": "x", "password": "y"}
            ),
        ),
        (404, client.build_request("GET", "/nowhere")),
        (405, client.build_request("DELETE", "/api/v1/products")),
        (413, client.build_request("POST", "/api/v1/users", content=b"x" * (2 * 1024 * 1024))),
        (422, client.build_request("GET", "/api/v1/products?limit=0")),
        (500, client.build_request("GET", "/test-only/explode")),
        (200, client.build_request("GET", "/docs")),
        (200, client.build_request("GET", "/openapi.json")),
        (200, client.build_request("GET", "/static/vendor/swagger-ui.css")),
        (404, client.build_request("GET", "/static/vendor/no-such-file.js")),
    ]
    for index, (status, request) in enumerate(requests):
        incoming = f"kind-{index}"
        request.headers["X-Request-ID"] = incoming
        response = await client.send(request)
        assert response.status_code == status, (request.url, response.text)
        assert response.headers.get_list("x-request-id") == [incoming], request.url


async def test_a_413_refused_before_the_app_runs_still_has_an_id(
    make_client: ClientFactory,
) -> None:
    client = await make_client(max_body_bytes=2048)
    response = await client.post(
        "/api/v1/users", content=b"{" + b" " * 4096 + b"}", headers={"X-Request-ID": "big-one"}
    )
    assert response.status_code == 413
    assert response.headers["x-request-id"] == "big-one"
    assert response.json()["request_id"] == "big-one"


async def test_the_access_log_line_carries_the_request_id(
    client: httpx.AsyncClient, service_log: LogLines
) -> None:
    response = await client.get("/api/v1/products/42", headers={"X-Request-ID": "trace-me-1"})
    assert response.status_code == 404

    [line] = service_log.of("app.access")
    assert line["request_id"] == "trace-me-1"
    assert line["status"] == 404
    assert line["method"] == "GET"
    # The route template, not the id from the path.
    assert line["route"] == "/api/v1/products/{product_id}"


async def test_a_generated_id_is_the_one_logged(
    client: httpx.AsyncClient, service_log: LogLines
) -> None:
    response = await client.get("/health/live", headers={"X-Request-ID": "not valid!"})
    generated = response.headers["x-request-id"]
    [line] = service_log.of("app.access")
    assert line["request_id"] == generated


async def test_every_log_line_of_a_request_has_its_id(
    client: httpx.AsyncClient, service_log: LogLines
) -> None:
    # Registration's welcome message is sent (to the log: no SMTP configured)
    # after the response, in a background task that still belongs to the request.
    response = await client.post(
        "/api/v1/users",
        json={"username": "dora", "email": "dora@example.com", "password": "correct horse"},
        headers={"X-Request-ID": "reg-dora"},
    )
    assert response.status_code == 201

    lines = service_log.with_request_id("reg-dora")
    loggers = {line["logger"] for line in lines}
    assert "app.access" in loggers
    assert "app.mail" in loggers
    assert all(
        line["request_id"] == "reg-dora" for line in service_log.all() if line.get("request_id")
    )


async def test_concurrent_requests_keep_their_own_ids(
    client: httpx.AsyncClient, service_log: LogLines
) -> None:
    ids = [f"parallel-{n}" for n in range(20)]
    responses = await asyncio.gather(
        *(
            client.get(f"/api/v1/products/{n + 1}", headers={"X-Request-ID": i})
            for n, i in enumerate(ids)
        )
    )
    assert [r.headers["x-request-id"] for r in responses] == ids
    assert [r.json()["request_id"] for r in responses] == ids

    by_id = {line["request_id"]: line for line in service_log.of("app.access")}
    assert set(by_id) == set(ids)
    assert all(by_id[i]["status"] == 404 for i in ids)


async def test_the_id_does_not_leak_into_the_next_request(
    client: httpx.AsyncClient, service_log: LogLines
) -> None:
    await client.get("/health/live", headers={"X-Request-ID": "first-one"})
    second = await client.get("/health/live")
    assert second.headers["x-request-id"] != "first-one"
    lines = service_log.of("app.access")
    assert [line["request_id"] for line in lines] == ["first-one", second.headers["x-request-id"]]
