"""Helpers for tests: accounts made through the API, problem checks, database reads."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI
from sqlalchemy import Select

from app.core.database import Database
from app.core.security import PasswordHasher
from app.users.schemas import UserCreate
from app.users.service import UserService

T = TypeVar("T")

DEFAULT_PASSWORD = "correct horse battery"


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
        return {"Authorization": f"Bearer {self.access_token}"}


async def login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/token", data={"username": username, "password": password}
    )


async def tokens_for(client: httpx.AsyncClient, username: str, password: str) -> dict[str, Any]:
    response = await login(client, username, password)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


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
        created = await UserService(session, hasher).ensure_admin(
            data.username, data.email, data.password
        )
        assert created
    tokens = await tokens_for(client, username, password)
    me = await client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    return Account(
        id=me.json()["id"],
        username=username,
        email=f"{username}@example.com",
        password=password,
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
    )


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
