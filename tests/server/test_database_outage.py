"""The database goes away and comes back: 503 within 5 seconds, then recovery, no restart.

The service reaches PostgreSQL through a TCP proxy of the test's own, which
refuses connections (the database is down) or swallows every byte (a network
partition: nothing is refused, nothing answers).
"""

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from app.main import create_app
from tests.conftest import make_settings
from tests.support import assert_problem
from tests.tcp_proxy import TcpProxy

OUTAGE_DEADLINE_SECONDS = 5.0


@pytest.fixture
async def proxy(backend: str, database_url: str) -> AsyncIterator[TcpProxy]:
    if backend != "postgresql":
        pytest.skip("SQLite is a file, not a server one can be cut off from")
    url = make_url(database_url)
    tcp_proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await tcp_proxy.start()
    yield tcp_proxy
    await tcp_proxy.close()


@pytest.fixture
async def proxied_client(
    proxy: TcpProxy, database_url: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    url = make_url(database_url).set(host="127.0.0.1", port=proxy.port)
    settings = make_settings(url.render_as_string(hide_password=False), tmp_path)
    app: FastAPI = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client
    await app.state.database.dispose()


async def _timed_get(client: httpx.AsyncClient, path: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await client.get(path)
    return response, time.monotonic() - started


async def _assert_unavailable(client: httpx.AsyncClient) -> None:
    response, elapsed = await _timed_get(client, "/api/v1/products")
    assert_problem(response, 503)
    assert int(response.headers["retry-after"]) > 0
    assert elapsed < OUTAGE_DEADLINE_SECONDS
    ready, elapsed = await _timed_get(client, "/health/ready")
    assert_problem(ready, 503)
    assert elapsed < OUTAGE_DEADLINE_SECONDS
    live = await client.get("/health/live")
    assert live.status_code == 200


async def _assert_recovers(client: httpx.AsyncClient) -> None:
    # A connection lost in the outage failed its statement (a 503) and made
    # the pool renew them all; one the server closed is replaced at checkout.
    response = await client.get("/api/v1/products")
    assert response.status_code == 200, response.text
    assert (await client.get("/health/ready")).status_code == 200


async def test_a_database_that_refuses_connections_gives_503_then_recovers(
    proxy: TcpProxy, proxied_client: httpx.AsyncClient
) -> None:
    assert (await proxied_client.get("/api/v1/products")).status_code == 200
    await proxy.refuse()
    await _assert_unavailable(proxied_client)
    await _assert_unavailable(proxied_client)  # and again: nothing hangs on a dead pool
    await proxy.restore()
    await _assert_recovers(proxied_client)


async def test_a_database_that_stops_answering_gives_503_within_5_seconds(
    proxy: TcpProxy, proxied_client: httpx.AsyncClient
) -> None:
    assert (await proxied_client.get("/api/v1/products")).status_code == 200
    proxy.blackhole()
    await _assert_unavailable(proxied_client)
    await proxy.restore()
    await _assert_recovers(proxied_client)


async def test_writes_during_an_outage_are_refused_not_lost(
    proxy: TcpProxy, proxied_client: httpx.AsyncClient
) -> None:
    body = {"username": "erin", "email": "erin@example.com", "password": "correct horse battery"}
    await proxy.refuse()
    refused = await proxied_client.post("/api/v1/users", json=body)
    assert_problem(refused, 503)
    await proxy.restore()
    # Nothing was half-written: the same registration now succeeds once.
    created = await proxied_client.post("/api/v1/users", json=body)
    assert created.status_code == 201, created.text
    again = await proxied_client.post("/api/v1/users", json=body)
    assert_problem(again, 409)
