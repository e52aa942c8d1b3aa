"""Fixtures: a real, freshly migrated database per test, on SQLite and on PostgreSQL.

Every test gets its own database, cloned from a template migrated once per
run (a file copy on SQLite, CREATE DATABASE ... TEMPLATE on PostgreSQL), so
tests commit for real, race for real, and never see each other's rows. On
PostgreSQL a database a test has finished with is emptied (TRUNCATE ...
RESTART IDENTITY) and handed to the next test of the same worker, unless its
schema or statistics changed or a PgBouncer pooled it: a clone costs ~0.4 s,
an emptying ~0.03 s.
PostgreSQL runs when TEST_DATABASE_URL names a server and a base database
name; the suite then runs every database test on both backends.
"""

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from app.core.config import Settings
from app.core.migrations import upgrade
from tests.support import (
    POOLED,
    Account,
    DatabaseProbe,
    client_for,
    create_account,
    create_admin,
)

if TYPE_CHECKING:
    from tests.pgbouncer import Bouncer

# The `inbox` fixture: a real SMTP server.
pytest_plugins = ["tests.mailbox", "tests.otlp"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get("TEST_DATABASE_URL")
BACKENDS = ["sqlite", *(["postgresql"] if POSTGRES_URL else [])]
TEST_SECRET_KEY = "test-secret-key-that-is-long-enough-for-hs256-0123456789"
# Fast hashing in tests; the production parameters are tested on their own.
FAST_HASHING = {"password_hash_memory_kib": 64, "password_hash_iterations": 1}


def make_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "data_dir": data_dir,
        "secret_key": TEST_SECRET_KEY,
        "log_format": "text",
        "login_max_failures": 5,
        "login_window_seconds": 900,
        **FAST_HASHING,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def _dsn(database: str = "postgres") -> str:
    """asyncpg's address of a database of the test server (by default the admin one)."""
    assert POSTGRES_URL is not None
    url = make_url(POSTGRES_URL).set(drivername="postgresql", database=database)
    return url.render_as_string(hide_password=False)


def _postgres_url(database: str) -> str:
    assert POSTGRES_URL is not None
    url = make_url(POSTGRES_URL).set(drivername="postgresql+asyncpg", database=database)
    return url.render_as_string(hide_password=False)


async def _admin_execute(*statements: str) -> None:
    connection = await asyncpg.connect(_dsn())
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


PGBOUNCER = "pgbouncer"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "concurrency: races that also run with the service behind PgBouncer in transaction mode",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every database test runs on each backend; races marked `concurrency`
    run a third time with the service's connections going through PgBouncer
    (`pgbouncer` in the test's id; the backend is then PostgreSQL)."""
    if "backend" not in metafunc.fixturenames:
        return
    backends = list(BACKENDS)
    if POSTGRES_URL and metafunc.definition.get_closest_marker("concurrency"):
        backends.append(PGBOUNCER)
    metafunc.parametrize("backend", backends, indirect=True, scope="session")


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    return "postgresql" if request.param == PGBOUNCER else str(request.param)


def through_pgbouncer(request: pytest.FixtureRequest) -> bool:
    callspec = getattr(request.node, "callspec", None)
    return callspec is not None and callspec.params.get("backend") == PGBOUNCER


@pytest.fixture(scope="session")
def pgbouncer() -> Iterator["Bouncer"]:
    """One PgBouncer per test process, in front of the test server."""
    from tests.pgbouncer import start_pgbouncer  # it needs this module loaded first

    assert POSTGRES_URL is not None
    bouncer = start_pgbouncer(POSTGRES_URL)
    yield bouncer
    bouncer.stop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


# Emptied databases of this worker, by template, ready for the next test.
_REUSABLE: dict[str, list[str]] = {}

# What must be as the template left it for an emptied database to count as a
# fresh clone: the migration, the number of relations (a test that migrates
# down and up again may leave the same schema with new oids: that is fine)
# and no ANALYZE (the list's estimates come from the planner's statistics,
# which TRUNCATE keeps).
_STATE = """
SELECT (SELECT string_agg(version_num, ',') FROM alembic_version),
       (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public'),
       (SELECT coalesce(sum(analyze_count + autoanalyze_count), 0) FROM pg_stat_user_tables)
"""


async def _emptied(name: str, template_state: tuple[Any, ...] | None) -> bool:
    """Empties a used database for the next test; False when it cannot be
    reused as a fresh clone (the caller drops it)."""
    try:
        connection = await asyncpg.connect(_dsn(name))
    except (OSError, asyncpg.PostgresError):
        return False
    try:
        # Whatever the test left connected (a server it started, PgBouncer's
        # pool) would hold locks TRUNCATE waits for.
        await connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        if tuple(await connection.fetchrow(_STATE)) != template_state:
            return False
        tables = await connection.fetch(
            "SELECT quote_ident(tablename) AS name FROM pg_tables"
            " WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        )
        await connection.execute("SET lock_timeout = '5s'")
        await connection.execute(
            f"TRUNCATE {', '.join(row['name'] for row in tables)} RESTART IDENTITY CASCADE"
        )
        return True
    except asyncpg.PostgresError:
        return False
    finally:
        await connection.close()


async def _template_state(name: str) -> tuple[Any, ...]:
    connection = await asyncpg.connect(_dsn(name))
    try:
        return tuple(await connection.fetchrow(_STATE))
    finally:
        await connection.close()


_TEMPLATE_STATES: dict[str, tuple[Any, ...]] = {}


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    assert POSTGRES_URL is not None
    base = make_url(POSTGRES_URL).database or "storefront_test"
    name = f"{base}_tmpl_{os.getpid()}"
    asyncio.run(
        _admin_execute(
            f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"'
        )
    )
    upgrade(_postgres_url(name))
    _TEMPLATE_STATES[name] = asyncio.run(_template_state(name))
    yield name
    clones = [
        f'DROP DATABASE IF EXISTS "{clone}" WITH (FORCE)' for clone in _REUSABLE.pop(name, [])
    ]
    asyncio.run(_admin_execute(*clones, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def database_template(backend: str, request: pytest.FixtureRequest) -> str:
    """The migrated template of this backend (resolved outside any event loop)."""
    if backend == "sqlite":
        return str(request.getfixturevalue("sqlite_template"))
    return str(request.getfixturevalue("postgres_template"))


@pytest.fixture
async def database_url(backend: str, database_template: str, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a database with the newest schema and no rows, as a fresh clone has."""
    if backend == "sqlite":
        path = tmp_path / "app.db"
        shutil.copyfile(database_template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    reusable = _REUSABLE.setdefault(database_template, [])
    if reusable:
        name = reusable.pop()
    else:
        name = f"{database_template}_{uuid.uuid4().hex[:12]}"
        await _admin_execute(f'CREATE DATABASE "{name}" TEMPLATE "{database_template}"')
    try:
        yield _postgres_url(name)
    finally:
        if name not in POOLED and await _emptied(name, _TEMPLATE_STATES.get(database_template)):
            reusable.append(name)
        else:
            await _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    if through_pgbouncer(request):
        # As the README says to run behind a transaction-mode pooler.
        return make_settings(
            request.getfixturevalue("pgbouncer").url_for(database_url),
            tmp_path / "data",
            db_statement_cache_size=0,
            database_listen_url=database_url,
        )
    return make_settings(database_url, tmp_path / "data")


@pytest.fixture
async def app_and_client(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with client_for(settings) as app_and_client:
        yield app_and_client


@pytest.fixture
def app(app_and_client: tuple[FastAPI, httpx.AsyncClient]) -> FastAPI:
    return app_and_client[0]


@pytest.fixture
def client(app_and_client: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return app_and_client[1]


@pytest.fixture
def db(app: FastAPI) -> DatabaseProbe:
    return DatabaseProbe(app.state.database)


@pytest.fixture
async def user(client: httpx.AsyncClient) -> Account:
    return await create_account(client, "alice")


@pytest.fixture
async def other_user(client: httpx.AsyncClient) -> Account:
    return await create_account(client, "bob")


@pytest.fixture
async def admin(client: httpx.AsyncClient, app: FastAPI) -> Account:
    return await create_admin(client, app, "root")


class Runner(Protocol):
    def __call__(
        self, *args: str, timeout: float = ..., **settings: str
    ) -> subprocess.CompletedProcess[str]: ...


@pytest.fixture
def run_app(tmp_path: Path) -> Runner:
    """Runs our interpreter in a clean environment holding only the given settings.

    The working directory is an empty one, so no `.env` lying in the project
    (a developer's own) changes what the command sees.
    """
    workdir = tmp_path / "cwd"
    workdir.mkdir()

    def run(*args: str, timeout: float = 120, **settings: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(PROJECT_ROOT),
            "ENVIRONMENT": "test",
            "SECRET_KEY": TEST_SECRET_KEY,
            "LOG_FORMAT": "text",
            **settings,
        }
        return subprocess.run(
            [sys.executable, *args],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run
