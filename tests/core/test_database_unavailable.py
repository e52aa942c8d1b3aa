"""API.md "Errors" and "Operations": an unreachable database is a 503 problem, never a hang.

Every route that needs the database answers 503 with `Retry-After`
(refused connections, a server that never answers, a SQLite file that
cannot be opened); `/health/live` stays 200 and `/health/ready` is 503; a
service started while the database is down serves as soon as it is back.
The tests bound every request with a generous deadline so a hang fails
rather than stalls; they assert no timings.
"""

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from jose import jwt
from sqlalchemy.engine import make_url

from tests.conftest import TEST_SECRET_KEY, make_settings
from tests.core.conftest import LogLines
from tests.support import assert_problem, bearer, client_for
from tests.tcp_proxy import TcpProxy

# Far above the contract's 5 seconds: only a hang trips it.
DEADLINE_SECONDS = 30
FAST_FAILURE = {"db_connect_timeout": 1.0, "db_command_timeout": 1.0, "db_pool_timeout": 1.0}

ClientOn = Callable[[str], Awaitable[httpx.AsyncClient]]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
async def client_on(tmp_path: Path) -> AsyncIterator[ClientOn]:
    """A client for an app on the given database URL (which need not answer)."""
    async with AsyncExitStack() as stack:

        async def build(url: str) -> httpx.AsyncClient:
            settings = make_settings(url, tmp_path / "data", **FAST_FAILURE)
            _, client = await stack.enter_async_context(client_for(settings))
            return client

        yield build


def _token(token_type: str, user_id: int = 1) -> str:
    """A well-formed, correctly signed token: checking it needs the database."""
    claims = {
        "iss": "storefront-api",
        "aud": "storefront-api",
        "sub": str(user_id),
        "iat": 1_700_000_000,
        "exp": 4_000_000_000,
        "jti": "0" * 32,
        "type": token_type,
        "ver": 1,
        "fam": "f" * 32,
    }
    header_type = "at+jwt" if token_type == "access" else "rt+jwt"
    return jwt.encode(claims, TEST_SECRET_KEY, algorithm="HS256", headers={"typ": header_type})


def _requests_needing_the_database() -> list[tuple[str, str, dict[str, Any]]]:
    headers = bearer(_token("access"))
    return [
        ("GET", "/api/v1/products", {}),
        ("GET", "/api/v1/products/1", {}),
        (
            "POST",
            "/api/v1/users",
            {
                "json": {
                    "username": "quinn",
                    "email": "quinn@example.com",
                    "password": "correct horse",
                }
            },
        ),
        ("POST", "/api/v1/auth/token", {"data": {"username": "quinn", "password": "x" * 10}}),
        ("POST", "/api/v1/auth/refresh", {"json": {"refresh_token": _token("refresh")}}),
        ("POST", "/api/v1/auth/logout", {"json": {"refresh_token": _token("refresh")}}),
        ("GET", "/api/v1/users/me", {"headers": headers}),
        ("POST", "/api/v1/products", {"json": {"name": "Cup", "price": 1}, "headers": headers}),
    ]


async def _assert_unavailable(client: httpx.AsyncClient) -> None:
    for method, path, options in _requests_needing_the_database():
        async with asyncio.timeout(DEADLINE_SECONDS):
            response = await client.request(method, path, **options)
        body = assert_problem(response, 503)
        assert int(response.headers["retry-after"]) > 0, path
        assert "database" in body["detail"].lower()
    async with asyncio.timeout(DEADLINE_SECONDS):
        ready = await client.get("/health/ready")
    assert_problem(ready, 503)
    assert int(ready.headers["retry-after"]) > 0
    live = await client.get("/health/live")
    assert live.status_code == 200
    assert live.json() == {"status": "ok"}


async def test_a_refused_connection_gives_503_on_every_database_route(
    client_on: ClientOn,
) -> None:
    client = await client_on(f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/x")
    await _assert_unavailable(client)


async def test_the_503_reveals_no_connection_details(
    client_on: ClientOn, service_log: LogLines
) -> None:
    port = _closed_port()
    client = await client_on(f"postgresql+asyncpg://dbuser:hunter2@127.0.0.1:{port}/shopdb")
    response = await client.get("/api/v1/products", headers={"X-Request-ID": "outage-1"})
    assert_problem(response, 503)
    for secret in ("hunter2", "dbuser", "shopdb", str(port), "Errno", "refused"):
        assert secret not in response.text
    # The log says what happened, for this request, without the password.
    lines = service_log.with_request_id("outage-1")
    assert any(line["logger"] == "app.errors" for line in lines)
    assert "hunter2" not in service_log.text


async def test_a_server_that_never_answers_gives_503_not_a_hang(client_on: ClientOn) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def swallow(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # keeps the connection open and says nothing

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = await client_on(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/x")
        async with asyncio.timeout(DEADLINE_SECONDS):
            response = await client.get("/api/v1/products")
        assert_problem(response, 503)
        assert int(response.headers["retry-after"]) > 0
        async with asyncio.timeout(DEADLINE_SECONDS):
            ready = await client.get("/health/ready")
        assert_problem(ready, 503)
        assert accepted  # the service did try, and gave up by itself
    finally:
        for writer in accepted:
            writer.transport.abort()
        server.close()
        await server.wait_closed()


async def test_a_sqlite_file_that_cannot_be_opened_gives_503(
    client_on: ClientOn, tmp_path: Path
) -> None:
    # A directory where the database file should be: SQLite cannot open it.
    directory = tmp_path / "not-a-file.db"
    directory.mkdir()
    client = await client_on(f"sqlite+aiosqlite:///{directory}")
    await _assert_unavailable(client)


async def test_a_service_started_while_the_database_is_down_serves_when_it_returns(
    backend: str, database_url: str, client_on: ClientOn
) -> None:
    if backend != "postgresql":
        pytest.skip("needs a database server to take away")
    target = make_url(database_url)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
    await proxy.start()
    await proxy.refuse()  # the port is known, nothing listens on it
    try:
        url = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        client = await client_on(url)
        async with asyncio.timeout(DEADLINE_SECONDS):
            down = await client.get("/api/v1/products")
        assert_problem(down, 503)

        await proxy.restore()
        async with asyncio.timeout(DEADLINE_SECONDS):
            up = await client.get("/api/v1/products")
        assert up.status_code == 200, up.text
        assert (await client.get("/health/ready")).status_code == 200
        registered = await client.post(
            "/api/v1/users",
            json={"username": "rita", "email": "rita@example.com", "password": "correct horse"},
        )
        assert registered.status_code == 201
    finally:
        await proxy.close()


async def test_connections_the_server_closed_are_replaced_not_answered_with_503(
    backend: str, database_url: str, client_on: ClientOn
) -> None:
    """A database restart or failover closes the pooled connections: no client sees it."""
    if backend != "postgresql":
        pytest.skip("needs a database server to close connections")
    client = await client_on(database_url)
    # Several at once, so that the pool holds several connections.
    warm = await asyncio.gather(*(client.get("/api/v1/products") for _ in range(4)))
    assert [r.status_code for r in warm] == [200] * 4

    database = make_url(database_url).database
    closer = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        closed = await closer.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
    finally:
        await closer.close()
    assert closed >= 1
    await asyncio.sleep(0.2)  # the server's goodbye reaches the pooled sockets

    async with asyncio.timeout(DEADLINE_SECONDS):
        after = [await client.get("/api/v1/products") for _ in range(6)]
        after.append(await client.get("/health/ready"))
    assert [r.status_code for r in after] == [200] * 7


async def test_a_database_refusing_more_connections_gives_503(
    backend: str, database_url: str, client_on: ClientOn
) -> None:
    """PostgreSQL's "too many clients" (SQLSTATE 53300) is a busy database, not a bug."""
    if backend != "postgresql":
        pytest.skip("needs a database server with a connection limit")
    role = f"storefront_limited_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        # The same refusal as a full server, for this role alone.
        await admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
        url = make_url(database_url).set(username=role, password=None)
        client = await client_on(url.render_as_string(hide_password=False))
        async with asyncio.timeout(DEADLINE_SECONDS):
            response = await client.get("/api/v1/products")
        assert_problem(response, 503)
        assert int(response.headers["retry-after"]) > 0
    finally:
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()
