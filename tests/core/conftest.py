"""Fixtures for the cross-cutting tests: apps with custom settings, and the service's log lines."""

import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.config import Settings
from tests.conftest import TEST_SECRET_KEY, make_settings
from tests.support import client_for, service_logging

ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def make_client(database_url: str, tmp_path: Path) -> AsyncIterator[ClientFactory]:
    """Builds an app on the test's database with some settings changed, and a client for it."""
    async with AsyncExitStack() as stack:

        async def build(**overrides: Any) -> httpx.AsyncClient:
            settings = make_settings(database_url, tmp_path / "data", **overrides)
            _, client = await stack.enter_async_context(client_for(settings))
            return client

        yield build


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


@pytest.fixture
def service_log() -> Iterator[LogLines]:
    """Logging set up as the service does it in production (JSON lines), into a buffer."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="production",
        secret_key=TEST_SECRET_KEY,
        log_format="json",
        log_level="INFO",
    )
    with service_logging(settings) as stream:
        yield LogLines(stream)
