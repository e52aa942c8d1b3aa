"""The production command, for real: Gunicorn with Uvicorn workers as a subprocess."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import FAST_HASHING, TEST_SECRET_KEY
from tests.support import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    """A running Gunicorn master; its JSON log lines are read from `log_path`."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    _offset: int = field(default=0)

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return records

    def pid_of(self, request_id: str, timeout: float = 5.0) -> int:
        """The worker that served the request with this X-Request-ID (from its access line)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.log_records():
                if record.get("logger") == "app.access" and record.get("request_id") == request_id:
                    return int(record["pid"])
            time.sleep(0.05)
        raise AssertionError(f"no access log line for request {request_id}")

    def worker_pids(self) -> set[int]:
        return {r["pid"] for r in self.log_records() if r.get("message") == "serving"}

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def server_environment(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_", "TEST_DATABASE", "SECRET_", "LOG_", "FIRST_ADMIN_"))
    }
    environment.update(
        {
            "ENVIRONMENT": "test",
            "DATABASE_URL": database_url,
            "DATA_DIR": str(data_dir),
            "SECRET_KEY": TEST_SECRET_KEY,
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            **{key.upper(): str(value) for key, value in FAST_HASHING.items()},
            **extra,
        }
    )
    return environment


def start_server(
    environment: dict[str, str],
    log_path: Path,
    *,
    workers: int = 2,
    args: tuple[str, ...] = (),
    probe: str = "/health/ready",
) -> Server:
    """Starts the production command and waits until `probe` answers 200 from every worker."""
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("gunicorn")),
        "-c",
        "gunicorn.conf.py",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        *args,
        "app.main:app",
    ]
    log = log_path.open("wb")
    process = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT
    )
    server = Server(process=process, base_url=f"http://127.0.0.1:{port}", log_path=log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {log_path.read_text(errors='replace')}")
        try:
            ready = httpx.get(f"{server.base_url}{probe}", timeout=1).status_code == 200
        except httpx.TransportError:
            ready = False
        if ready and len(server.worker_pids()) >= workers:
            return server
        time.sleep(0.1)
    server.stop()
    raise AssertionError(f"server did not become ready: {log_path.read_text(errors='replace')}")


@contextmanager
def two_servers(environment: dict[str, str], tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    """Two production servers (two replicas) on one database, stopped afterwards."""
    first = start_server(environment, tmp_path / "first.log")
    try:
        second = start_server(environment, tmp_path / "second.log")
    except BaseException:
        first.stop()
        raise
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    """The production command with two workers on this test's own database."""
    sync_url = database_url
    running = start_server(server_environment(sync_url, tmp_path / "data"), tmp_path / "server.log")
    yield running
    running.stop()
