"""Fixtures for the cross-cutting tests: apps with custom settings, and the service's log lines."""

import io
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.core.config import Settings
from app.core.logging import configure_logging
from app.main import create_app
from tests.conftest import TEST_SECRET_KEY, make_settings

ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def make_client(database_url: str, tmp_path: Path) -> AsyncIterator[ClientFactory]:
    """Builds an app on the test's database with some settings changed, and a client for it."""
    apps: list[FastAPI] = []
    clients: list[httpx.AsyncClient] = []

    async def build(**overrides: Any) -> httpx.AsyncClient:
        application = create_app(make_settings(database_url, tmp_path / "data", **overrides))
        apps.append(application)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://testserver"
        )
        clients.append(client)
        return client

    yield build
    for client in clients:
        await client.aclose()
    for application in apps:
        await application.state.database.dispose()


class LogLines:
    """What the service wrote to its log, one parsed JSON object per line."""

    def __init__(self, stream: io.StringIO) -> None:
        self._stream = stream

    def all(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self._stream.getvalue().splitlines() if line]

    def of(self, logger: str) -> list[dict[str, Any]]:
        return [entry for entry in self.all() if entry["logger"] == logger]

    def with_request_id(self, request_id: str) -> list[dict[str, Any]]:
        return [entry for entry in self.all() if entry.get("request_id") == request_id]

    @property
    def text(self) -> str:
        return self._stream.getvalue()


_TOUCHED_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "gunicorn.error")


@pytest.fixture
def service_log() -> Iterator[LogLines]:
    """Logging set up as the service does it in production (JSON lines), into a buffer.

    The global logging state is put back afterwards, so other tests keep
    pytest's own capture.
    """
    root = logging.getLogger()
    saved_root = (root.handlers[:], root.level)
    saved = {
        name: (logger.handlers[:], logger.propagate, logger.disabled)
        for name in _TOUCHED_LOGGERS
        for logger in [logging.getLogger(name)]
    }
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="production",
        secret_key=TEST_SECRET_KEY,
        log_format="json",
        log_level="INFO",
    )
    configure_logging(settings)
    stream = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    try:
        yield LogLines(stream)
    finally:
        handlers, level = saved_root
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, (own_handlers, propagate, disabled) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:] = own_handlers
            logger.propagate = propagate
            logger.disabled = disabled
