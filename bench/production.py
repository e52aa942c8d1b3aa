"""What the benchmarks share: the production command's environment, its migration and a port.

`make bench`, `make bench-scale` and `make soak` each measure the service as
it runs in production: `python -m app migrate`, then `gunicorn -c
gunicorn.conf.py app.main:app`, with every setting at its default whatever
`.env` or the calling shell say.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Self, TextIO

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/<script>.py` puts bench/ there, not the repo
    sys.path.insert(0, str(ROOT))

# What gunicorn.conf.py reads from the environment: left out, so that its
# defaults and the command line decide.
GUNICORN_VARIABLES = (
    *("BIND", "PORT", "WEB_CONCURRENCY", "GRACEFUL_TIMEOUT", "FORWARDED_ALLOW_IPS"),
    "KEEPALIVE_SECONDS",
    "PROMETHEUS_MULTIPROC_DIR",
)


class ProductionError(RuntimeError):
    """The production command could not be migrated, or did not start serving."""


def environment(database_url: str, log_level: str, **settings: str) -> dict[str, str]:
    """The environment of the production command and of its migration.

    Every setting of the service is given explicitly, at its default unless
    `settings` says otherwise; ENVIRONMENT=production, JSON logs at
    `log_level` and a random SECRET_KEY. The calling shell's other variables
    (PATH, ...) pass through.
    """
    from app.core.config import Settings

    names = {name.upper() for name in Settings.model_fields}
    result = {
        key: value
        for key, value in os.environ.items()
        if key.upper() not in names and key not in GUNICORN_VARIABLES
    }
    for name, info in Settings.model_fields.items():
        if name.upper() in GUNICORN_VARIABLES:  # WEB_CONCURRENCY: gunicorn.conf.py sets it
            continue
        if isinstance(info.default, str | int | float | Path):  # bools are ints
            result[name.upper()] = str(info.default)
    result.update(
        ENVIRONMENT="production",
        DATABASE_URL=database_url,
        SECRET_KEY=secrets.token_urlsafe(48),
        LOG_FORMAT="json",
        LOG_LEVEL=log_level,
    )
    result.update(settings)
    return result


def migrate(environment: dict[str, str], log: TextIO) -> None:
    """`python -m app migrate`, its output appended to `log`."""
    log.flush()
    done = subprocess.run(
        [sys.executable, "-m", "app", "migrate"],
        cwd=ROOT,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        check=False,
    )
    if done.returncode != 0:
        raise ProductionError(f"`python -m app migrate` failed ({done.returncode}); see {log.name}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    """The production command on a free local port, running as a child of this process."""

    process: Popen[bytes]
    base_url: str
    log_path: Path

    @classmethod
    def start(cls, environment: dict[str, str], workers: int, log: TextIO) -> Self:
        gunicorn = Path(sys.executable).with_name("gunicorn")
        port = free_port()
        command = [
            str(gunicorn) if gunicorn.exists() else shutil.which("gunicorn") or "gunicorn",
            *("-c", "gunicorn.conf.py", "app.main:app"),
            *("--bind", f"127.0.0.1:{port}", "--workers", str(workers)),
        ]
        log.flush()
        process = subprocess.Popen(  # noqa: S603
            command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT
        )
        return cls(process, f"http://127.0.0.1:{port}", Path(log.name))

    def ready(self) -> bool:
        """Whether /health/ready answers 200."""
        try:
            return httpx.get(f"{self.base_url}/health/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def wait_until_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ProductionError(
                    f"the server exited with {self.process.returncode}; see {self.log_path}"
                )
            if self.ready():
                return
            time.sleep(0.2)
        raise ProductionError(
            f"the server was not ready within {timeout:.0f} s; see {self.log_path}"
        )

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, then the exit status; None if it had to be killed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return None
        return self.process.returncode
