"""Helpers for tests: apps with clients, accounts made through the API, problem checks, DB reads."""

import io
import logging
import socket
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI
from sqlalchemy import Select

from app.account.models import AccountToken, TokenPurpose
from app.core.config import Settings
from app.core.database import Database
from app.core.logging import configure_logging
from app.core.models import utc_now
from app.core.security import OneTimeTokens, PasswordHasher
from app.main import create_app
from app.users.schemas import UserCreate
from app.users.service import UserService

T = TypeVar("T")

DEFAULT_PASSWORD = "correct horse battery"


@asynccontextmanager
async def client_for(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """An app built from `settings` and a client on it; the app's database is disposed after."""
    app = create_app(settings)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield app, client
    finally:
        await app.state.database.dispose()


# The loggers the service's logging set-up changes, besides the root logger.
_SERVICE_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "gunicorn.error",
    "gunicorn.access",
    "aiosqlite",
)


@contextmanager
def service_logging(settings: Settings) -> Iterator[io.StringIO]:
    """Logging set up as the service does it with `settings`, written into a buffer.

    The global logging state is put back afterwards, so other tests keep
    pytest's own capture.
    """
    root = logging.getLogger()
    saved_root = (root.handlers[:], root.level)
    saved = {
        name: (logger.handlers[:], logger.propagate, logger.disabled, logger.level)
        for name in _SERVICE_LOGGERS
        for logger in [logging.getLogger(name)]
    }
    configure_logging(settings)
    buffer = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    try:
        yield buffer
    finally:
        root.handlers[:], level = saved_root
        root.setLevel(level)
        for name, (handlers, propagate, disabled, own_level) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:] = handlers
            logger.propagate = propagate
            logger.disabled = disabled
            logger.setLevel(own_level)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Account:
    id: int
    username: str
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.access_token)


async def login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/token", data={"username": username, "password": password}
    )


async def tokens_for(client: httpx.AsyncClient, username: str, password: str) -> dict[str, Any]:
    response = await login(client, username, password)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def refresh(client: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await client.post("/api/v1/auth/refresh", json={"refresh_token": refresh_token})


async def register(
    client: httpx.AsyncClient, username: str, password: str = DEFAULT_PASSWORD, **extra: Any
) -> httpx.Response:
    body = {"username": username, "email": f"{username}@example.com", "password": password}
    return await client.post("/api/v1/users", json={**body, **extra})


async def create_account(
    client: httpx.AsyncClient, username: str, password: str = DEFAULT_PASSWORD
) -> Account:
    """Registers through the API and signs in."""
    response = await register(client, username, password)
    assert response.status_code == 201, response.text
    tokens = await tokens_for(client, username, password)
    return Account(
        id=response.json()["id"],
        username=username,
        email=f"{username}@example.com",
        password=password,
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
    )


async def create_admin(
    client: httpx.AsyncClient, app: FastAPI, username: str, password: str = DEFAULT_PASSWORD
) -> Account:
    """An admin can only be made outside the API (settings or CLI); this uses the same service."""
    database: Database = app.state.database
    hasher: PasswordHasher = app.state.password_hasher
    async with database.sessionmaker() as session, session.begin():
        data = UserCreate(username=username, email=f"{username}@example.com", password=password)
        created = await UserService(session, hasher, app.state.settings).ensure_admin(
            data.username, data.email, data.password
        )
        assert created
    tokens = await tokens_for(client, username, password)
    me = await client.get("/api/v1/users/me", headers=bearer(tokens["access_token"]))
    return Account(
        id=me.json()["id"],
        username=username,
        email=f"{username}@example.com",
        password=password,
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
    )


async def mint_token(
    app: FastAPI, user_id: int, address: str, purpose: TokenPurpose, *, lifetime_hours: float = 1
) -> str:
    """A live one-time token, stored as the service stores them, for tests of what a token
    unlocks rather than of how it is mailed (tests/account/ reads them out of real mail)."""
    database: Database = app.state.database
    token, token_hash = OneTimeTokens(app.state.settings).new()
    now = utc_now()
    async with database.sessionmaker() as session, session.begin():
        session.add(
            AccountToken(
                user_id=user_id,
                purpose=purpose,
                token_hash=token_hash,
                address=address.lower(),
                created_at=now,
                expires_at=now + timedelta(hours=lifetime_hours),
            )
        )
    return token


def assert_problem(
    response: httpx.Response, status: int, detail: str | None = None
) -> dict[str, Any]:
    """Checks an RFC 9457 problem response and returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == "about:blank"
    assert body["status"] == status
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert body["instance"] in {response.request.url.path, response.request.url.path.rstrip("/")}
    assert body["request_id"] == response.headers["x-request-id"]
    if detail is not None:
        assert detail in body["detail"], body["detail"]
    return body


def assert_unauthenticated(response: httpx.Response) -> dict[str, Any]:
    """A 401 problem with a Bearer challenge; returns its body."""
    body = assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    return body


def error_locations(response: httpx.Response) -> list[list[str | int]]:
    """The `loc` of each entry of a 422's `errors`."""
    return [error["loc"] for error in response.json()["errors"]]


class DatabaseProbe:
    """Reads what the database holds, each read in its own short transaction.

    A test must not hold a transaction open between requests: on SQLite it
    would hold the write lock the application needs.
    """

    def __init__(self, database: Database) -> None:
        self._database = database

    async def scalar(self, statement: Select[tuple[T]]) -> T | None:
        async with self._database.sessionmaker() as session:
            return await session.scalar(statement)

    async def all(self, statement: Select[tuple[T]]) -> Sequence[T]:
        async with self._database.sessionmaker() as session:
            return (await session.scalars(statement)).all()

    async def get(self, model: type[T], ident: Any) -> T | None:
        async with self._database.sessionmaker() as session:
            return await session.get(model, ident)


# The databases a PgBouncer of this test process has pooled (tests/pgbouncer.py):
# its idle server connections to them may outlive the test, so conftest's
# database_url never hands them to another test.
POOLED: set[str] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
