"""Behind PgBouncer in transaction mode (Debian's package, 1.18), as the README says to run it.

The production command reaches PostgreSQL through a real PgBouncer with
`pool_mode = transaction`, `DB_STATEMENT_CACHE_SIZE=0` and
`DATABASE_LISTEN_URL` at the database itself; a mixed load, racing
conditional updates, two servers and a live event stream all work, with
no error. PgBouncer refuses to run as root: as root the tests start it as
`postgres`. Skipped where it is not installed (`.ci/run` installs it).
"""

import asyncio
import concurrent.futures
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from app.core.migrations import upgrade
from tests.conftest import _admin_execute, _postgres_url
from tests.pgbouncer import Bouncer, pooled_environment, start_pgbouncer
from tests.server.conftest import Server, start_server, two_servers
from tests.streams import SseStream, events_url

PASSWORD = "a pooled passphrase"


@pytest.fixture
def bouncer(backend: str, database_url: str) -> Iterator[Bouncer]:
    """A PgBouncer of this test's own, so its log holds this test's traffic alone."""
    if backend != "postgresql":
        pytest.skip("PgBouncer pools PostgreSQL connections")
    bouncer = start_pgbouncer(database_url)
    yield bouncer
    bouncer.stop()


@pytest.fixture
def pooled_server(bouncer: Bouncer, database_url: str, tmp_path: Path) -> Iterator[Server]:
    server = start_server(
        pooled_environment(bouncer, database_url, tmp_path / "data"), tmp_path / "server.log"
    )
    yield server
    server.stop()


class Client:
    """A signed-up user driving the API over one keep-alive connection."""

    def __init__(self, base_url: str, name: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30)
        body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
        assert self.http.post("/api/v1/users", json=body).status_code == 201
        token = self.http.post(
            "/api/v1/auth/token", data={"username": name, "password": PASSWORD}
        ).json()["access_token"]
        self.http.headers["Authorization"] = f"Bearer {token}"

    def session(self, rounds: int, seed: int) -> Counter[str]:
        """`rounds` of create, read, list, conditional change, refresh and delete."""
        rng = random.Random(seed)
        seen: Counter[str] = Counter()

        def note(response: httpx.Response, *expected: int) -> httpx.Response:
            key = f"{response.request.method} {response.status_code}"
            seen[key if response.status_code in expected else f"UNEXPECTED {key}"] += 1
            return response

        for n in range(rounds):
            created = note(
                self.http.post(
                    "/api/v1/products",
                    json={"name": f"Pooled {seed}-{n}", "price": f"{rng.randint(1, 99)}.50"},
                ),
                201,
            ).json()
            path = f"/api/v1/products/{created['id']}"
            note(self.http.get(path), 200)
            note(self.http.get("/api/v1/products", params={"q": "pooled", "limit": 5}), 200)
            note(self.http.get("/api/v1/products", params={"sort": "-price"}), 200)
            note(self.http.get("/api/v1/users/me"), 200)
            changed = note(
                self.http.patch(path, json={"price": "12.00"}, headers={"If-Match": '"1"'}), 200
            )
            note(self.http.get(path, headers={"If-None-Match": changed.headers["etag"]}), 304)
            note(self.http.delete(path, headers={"If-Match": changed.headers["etag"]}), 204)
        return seen


def test_a_mixed_load_behind_pgbouncer_has_no_errors(
    pooled_server: Server, bouncer: Bouncer, tmp_path: Path
) -> None:
    stream = SseStream(events_url(pooled_server.base_url))
    try:
        clients = [Client(pooled_server.base_url, f"pooled{n}") for n in range(12)]
        with concurrent.futures.ThreadPoolExecutor(len(clients)) as pool:
            results = list(pool.map(lambda c: c[1].session(25, c[0]), enumerate(clients)))
        totals = sum(results, Counter())
        # 12 clients x 25 rounds x 8 requests, besides sign-up and sign-in.
        assert sum(totals.values()) == 2400
        assert not [key for key in totals if key.startswith("UNEXPECTED")], totals
        # The stream, fed through LISTEN on the direct URL, saw every change:
        # a create, a change and a delete per round.
        events = stream.wait_for(3 * 12 * 25, timeout=60)
        assert Counter(e.event for e in events) == {
            "product.created": 300,
            "product.updated": 300,
            "product.deleted": 300,
        }
    finally:
        stream.close()
    # The requests went through PgBouncer, and it saw no error.
    log = bouncer.log()
    assert "login attempt" in log
    assert "ERROR" not in log, log[-3000:]


def test_two_servers_behind_one_pgbouncer_race_one_if_match(
    bouncer: Bouncer, database_url: str, tmp_path: Path
) -> None:
    environment = pooled_environment(bouncer, database_url, tmp_path / "data")
    with two_servers(environment, tmp_path) as (first, second):
        owner = Client(first.base_url, "racer")
        product = owner.http.post("/api/v1/products", json={"name": "Raced", "price": 1}).json()
        path = f"/api/v1/products/{product['id']}"
        headers = {"Authorization": owner.http.headers["Authorization"], "If-Match": '"1"'}

        def attempt(n: int) -> int:
            server = (first, second)[n % 2]
            response = httpx.patch(
                server.base_url + path, json={"price": f"{n + 2}"}, headers=headers, timeout=30
            )
            return response.status_code

        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            statuses = Counter(pool.map(attempt, range(20)))

        assert statuses == {200: 1, 412: 19}
        final: dict[str, Any] = httpx.get(second.base_url + path, timeout=10).json()
        assert final["version"] == 2


async def test_jit_is_off_for_sessions_that_come_through_pgbouncer(
    bouncer: Bouncer, database_url: str
) -> None:
    """Migration 0006 turns JIT off for the database: no startup parameter needed.

    On a database of its own, migrated as `python -m app migrate` does:
    CREATE DATABASE ... TEMPLATE (how the other tests get theirs) does not
    copy a database's settings.
    """
    name = f"{make_url(database_url).database}_jit"
    await _admin_execute(
        f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"'
    )
    try:
        await asyncio.to_thread(upgrade, _postgres_url(name))
        url = make_url(_postgres_url(name)).set(host="127.0.0.1", port=bouncer.port)
        connection = await asyncpg.connect(
            url.set(drivername="postgresql").render_as_string(hide_password=False),
            statement_cache_size=0,
        )
        try:
            assert await connection.fetchval("SHOW jit") == "off"
        finally:
            await connection.close()
    finally:
        await _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
