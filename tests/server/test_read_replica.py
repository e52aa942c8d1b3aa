"""Read replicas (DATABASE_READ_URL) against a real PostgreSQL streaming replica.

One standby per test session, made with pg_basebackup and started with
pg_ctl as the `postgres` OS user. Streaming replication replays everything,
CREATE DATABASE included, so each test's database, made on the primary
afterwards, appears on the replica too.

The primary is the server TEST_DATABASE_URL names when its pg_hba.conf lets
127.0.0.1 make a replication connection. When it does not (no `replication`
line), the machine's configuration is left alone: the fixture makes a
private primary with initdb, whose own pg_hba.conf allows it, and replicates
that instead.
"""

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from app.core.migrations import upgrade
from tests.conftest import POSTGRES_URL
from tests.server.conftest import Server, free_port, server_environment, start_server

PG_BIN = Path(os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin"))
PASSWORD = "a replicated passphrase"
# The replica's health check runs once a second in each worker.
CHECK_SECONDS = 1.0


# --- The replica (and, if need be, a private primary) ---------------------------------


def _as_postgres(*command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """PostgreSQL's programs refuse to run as root: they run as `postgres` then."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run(
        [*prefix, *command], capture_output=True, text=True, timeout=timeout, check=False
    )


def _fetchval(dsn: str, query: str, timeout: float = 5) -> Any:
    async def fetch() -> Any:
        connection = await asyncpg.connect(dsn, timeout=timeout)
        try:
            return await connection.fetchval(query)
        finally:
            await connection.close()

    return asyncio.run(fetch())


@dataclass
class Cluster:
    """A PostgreSQL cluster of this test session's own, in a temporary directory."""

    data_dir: Path
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.data_dir}"
        )
        pg_ctl = str(PG_BIN / "pg_ctl")
        log = str(self.data_dir / "log")
        started = _as_postgres(
            pg_ctl, "-D", str(self.data_dir), "-o", options, "-l", log, "-w", "start"
        )
        assert started.returncode == 0, started.stdout + started.stderr + self.log()

    def stop(self, mode: str = "fast") -> None:
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def log(self) -> str:
        path = self.data_dir / "log"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class Replication:
    primary_url: str  # a libpq URL of the primary's `postgres` database
    replica: Cluster

    def wait_for_replica(self, database: str = "postgres", timeout: float = 30) -> None:
        """Until the replica accepts connections to `database`, in recovery."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if _fetchval(self.replica.url(database), "SELECT pg_is_in_recovery()") is True:
                    return
            except (OSError, asyncpg.PostgresError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the replica is not serving {database}: {self.replica.log()}")
            time.sleep(0.1)


def _private_primary(root: Path) -> Cluster:
    """A primary of our own (initdb's pg_hba.conf allows local replication)."""
    primary = Cluster(root / "primary", free_port())
    made = _as_postgres(
        str(PG_BIN / "initdb"), "-D", str(primary.data_dir), "-U", "postgres", "-A", "trust"
    )
    assert made.returncode == 0, made.stdout + made.stderr
    primary.start()
    return primary


@pytest.fixture(scope="session")
def replication() -> Iterator[Replication]:
    if POSTGRES_URL is None:
        pytest.skip("read replicas need PostgreSQL: set TEST_DATABASE_URL")
    if not (PG_BIN / "pg_basebackup").exists():
        pytest.skip(f"no PostgreSQL server programs in {PG_BIN} (set PG_BINDIR)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot run PostgreSQL as postgres")
    root = Path(tempfile.mkdtemp(prefix="storefront-replica-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    machine = make_url(POSTGRES_URL)
    primary_url = (
        f"postgresql://{machine.username or 'postgres'}@{machine.host or '127.0.0.1'}:"
        f"{machine.port or 5432}/postgres"
    )
    private: Cluster | None = None
    replica = Cluster(root / "replica", free_port())
    try:
        for attempt in ("machine", "private"):
            source = make_url(primary_url)
            copied = _as_postgres(
                str(PG_BIN / "pg_basebackup"),
                *("-h", str(source.host), "-p", str(source.port), "-U", str(source.username)),
                *("-D", str(replica.data_dir), "-R", "-X", "stream", "-c", "fast"),
            )
            if copied.returncode == 0:
                break
            refused = "no pg_hba.conf entry for replication" in copied.stderr
            if attempt == "private" or not refused:
                pytest.skip(f"pg_basebackup failed: {copied.stderr.strip()}")
            # The machine's primary allows no replication connection; its
            # configuration is not ours to change.
            shutil.rmtree(replica.data_dir, ignore_errors=True)
            private = _private_primary(root)
            primary_url = private.url()
        replica.start()
        replication = Replication(primary_url, replica)
        replication.wait_for_replica()
        yield replication
    finally:
        replica.stop("immediate")
        if private is not None:
            private.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Databases:
    primary: str
    replica: str
    name: str


@pytest.fixture
def databases(replication: Replication) -> Iterator[Databases]:
    """A migrated database on the primary, once it has reached the replica too."""
    name = f"storefront_replica_{uuid.uuid4().hex[:12]}"
    primary = make_url(replication.primary_url).set(database=name)
    _fetchval(replication.primary_url, f'CREATE DATABASE "{name}"')
    try:
        upgrade(primary.set(drivername="postgresql+asyncpg").render_as_string(False))
        replication.wait_for_replica(name)
        yield Databases(primary.render_as_string(False), replication.replica.url(name), name)
    finally:
        _fetchval(replication.primary_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- Helpers ------------------------------------------------------------------------


def _serve(databases: Databases, tmp_path: Path, workers: int = 2, **extra: str) -> Server:
    environment = server_environment(
        databases.primary, tmp_path / "data", DATABASE_READ_URL=databases.replica, **extra
    )
    return start_server(environment, tmp_path / "server.log", workers=workers)


def _reads(server: Server) -> dict[str, float]:
    """db_reads_total by database, summed over the workers."""
    found = {"primary": 0.0, "replica": 0.0}
    for line in httpx.get(f"{server.base_url}/metrics", timeout=10).text.splitlines():
        match = re.fullmatch(r'db_reads_total\{database="(\w+)"\} (\S+)', line)
        if match:
            found[match[1]] = float(match[2])
    return found


def _wait_for_replica_state(server: Server, state: str, timeout: float = 15) -> None:
    """Until /health/ready (200) reports `state` three times in a row (every worker)."""
    deadline = time.monotonic() + timeout
    in_a_row = 0
    last: Any = None
    while in_a_row < 3:
        response = httpx.get(f"{server.base_url}/health/ready", timeout=5)
        assert response.status_code == 200, response.text
        last = response.json()
        in_a_row = in_a_row + 1 if last["read_replica"] == state else 0
        assert time.monotonic() < deadline, f"read_replica never {state!r}: {last}"
        time.sleep(0.2 if in_a_row else CHECK_SECONDS / 4)


def _sign_up(server: Server, name: str) -> dict[str, str]:
    """Registration (a write) and the token endpoint: both work, so both used the primary."""
    body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    created = httpx.post(f"{server.base_url}/api/v1/users", json=body, timeout=30)
    assert created.status_code == 201, created.text
    token = httpx.post(
        f"{server.base_url}/api/v1/auth/token",
        data={"username": name, "password": PASSWORD},
        timeout=30,
    )
    assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


def _create(server: Server, headers: dict[str, str], name: str) -> int:
    body = {"name": name, "price": "9.50"}
    created = httpx.post(
        f"{server.base_url}/api/v1/products", json=body, headers=headers, timeout=30
    )
    assert created.status_code == 201, created.text
    return int(created.json()["id"])


def _wait_until_visible(server: Server, product_id: int, timeout: float = 10) -> None:
    """An anonymous reader sees a new product once the replica has replayed it."""
    deadline = time.monotonic() + timeout
    while (
        status := httpx.get(f"{server.base_url}/api/v1/products/{product_id}").status_code
    ) != 200:
        assert status == 404, status
        assert time.monotonic() < deadline, "the new product never reached anonymous readers"
        time.sleep(0.05)


def _product_scans(dsn: str) -> int:
    return int(
        _fetchval(
            dsn,
            "SELECT COALESCE(seq_scan, 0) + COALESCE(idx_scan, 0) FROM pg_stat_user_tables "
            "WHERE relname = 'products'",
        )
    )


# --- Tests --------------------------------------------------------------------------


def test_anonymous_product_reads_go_to_the_replica_and_the_rest_to_the_primary(
    databases: Databases, tmp_path: Path
) -> None:
    server = _serve(databases, tmp_path)
    try:
        _wait_for_replica_state(server, "ok")
        # A write and the token endpoint: on the replica both would fail
        # (it is read-only), so their success shows they used the primary.
        headers = _sign_up(server, "reader")
        product_id = _create(server, headers, "Replicated")
        _wait_until_visible(server, product_id)

        before, scans_before = _reads(server), _product_scans(databases.replica)
        for _ in range(10):
            assert httpx.get(f"{server.base_url}/api/v1/products/{product_id}").status_code == 200
            listed = httpx.get(f"{server.base_url}/api/v1/products")
            assert listed.status_code == 200
            assert product_id in [item["id"] for item in listed.json()["items"]]
        after = _reads(server)
        assert after["replica"] - before["replica"] == 20
        assert after["primary"] == before["primary"]
        # The replica's own statistics agree (flushed within about 10 s).
        deadline = time.monotonic() + 15
        while _product_scans(databases.replica) < scans_before + 10:
            assert time.monotonic() < deadline, "the replica scanned no products"
            time.sleep(0.5)

        # Signed in: the primary, even for the same reads.
        for _ in range(5):
            url = f"{server.base_url}/api/v1/products/{product_id}"
            assert httpx.get(url, headers=headers).status_code == 200
            listed = httpx.get(f"{server.base_url}/api/v1/products", headers=headers)
            assert listed.status_code == 200
        signed_in = _reads(server)
        assert signed_in["primary"] - after["primary"] == 10
        assert signed_in["replica"] == after["replica"]
    finally:
        server.stop()


def test_a_lagging_replica_sends_reads_to_the_primary(
    databases: Databases, replication: Replication, tmp_path: Path
) -> None:
    server = _serve(databases, tmp_path, workers=1, READ_REPLICA_MAX_LAG_SECONDS="1")
    try:
        _wait_for_replica_state(server, "ok")
        headers = _sign_up(server, "lagged")
        _wait_until_visible(server, _create(server, headers, "Before"))
        _fetchval(databases.replica, "SELECT pg_wal_replay_pause()")
        try:
            late = _create(server, headers, "While paused")
            _wait_for_replica_state(server, "lagging")
            before = _reads(server)
            # Not replayed on the replica, yet anonymous readers see it: the primary answers.
            assert httpx.get(f"{server.base_url}/api/v1/products/{late}").status_code == 200
            assert _reads(server)["primary"] == before["primary"] + 1
        finally:
            _fetchval(databases.replica, "SELECT pg_wal_replay_resume()")
        _wait_for_replica_state(server, "ok")
    finally:
        server.stop()


def test_a_replica_that_stops_costs_no_request(
    databases: Databases, replication: Replication, tmp_path: Path
) -> None:
    server = _serve(databases, tmp_path)
    try:
        _wait_for_replica_state(server, "ok")
        product_id = _create(server, _sign_up(server, "steady"), "Steady")
        _wait_until_visible(server, product_id)

        statuses: list[int] = []
        done = threading.Event()

        def read_anonymously() -> None:
            with httpx.Client(base_url=server.base_url, timeout=10) as client:
                while not done.is_set():
                    statuses.append(client.get(f"/api/v1/products/{product_id}").status_code)
                    statuses.append(client.get("/api/v1/products").status_code)

        readers = [threading.Thread(target=read_anonymously) for _ in range(4)]
        for reader in readers:
            reader.start()
        try:
            time.sleep(1)
            replication.replica.stop("immediate")
            time.sleep(3)
        finally:
            done.set()
            for reader in readers:
                reader.join()
        assert statuses, "no reads were made"
        assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}

        _wait_for_replica_state(server, "down")
        before = _reads(server)
        assert httpx.get(f"{server.base_url}/api/v1/products/{product_id}").status_code == 200
        assert _reads(server)["primary"] == before["primary"] + 1
    finally:
        server.stop()
        replication.replica.start()
        replication.wait_for_replica()


def test_a_standby_as_the_primary_is_not_ready_and_writes_get_503(
    databases: Databases, tmp_path: Path
) -> None:
    environment = server_environment(databases.replica, tmp_path / "data")
    server = start_server(environment, tmp_path / "server.log", workers=1, probe="/health/live")
    try:
        ready = httpx.get(f"{server.base_url}/health/ready", timeout=10)
        assert ready.status_code == 503, ready.text
        assert "standby" in ready.json()["detail"]
        # Reads still work on a standby; a write is a 503, not a 500.
        assert httpx.get(f"{server.base_url}/api/v1/products", timeout=10).status_code == 200
        body = {"username": "nobody", "email": "nobody@example.com", "password": PASSWORD}
        refused = httpx.post(f"{server.base_url}/api/v1/users", json=body, timeout=30)
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"]
        deadline = time.monotonic() + 5
        while not any("SQLSTATE 25006" in r.get("message", "") for r in server.log_records()):
            assert time.monotonic() < deadline, "no log line names the read-only database"
            time.sleep(0.1)
    finally:
        server.stop()
