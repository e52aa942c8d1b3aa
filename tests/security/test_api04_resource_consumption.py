"""OWASP API4:2023 Unrestricted Resource Consumption, applied to this service.

What a client could make this service spend without limit: rows per
response (the product and user lists), memory for request bodies, CPU for
password hashing (argon2id is slow and memory-hard by design, so every
hash a stranger can trigger is an amplifier), CPU for parsing hostile JSON
and query strings, and database work for text search.

The defences shown here: `limit` is 1 to 100 on every list; bodies over
`MAX_BODY_BYTES` get 413 before the application reads them (a declared
length is refused unread, a chunked body is cut off as soon as it passes
the limit); `q` is at most 100 characters; passwords are at most 128
characters at registration and change (1024 in the login form), refused by
validation before any hashing; a locked account's logins are refused
before any hashing; hashes run in a bounded number of threads
(`PASSWORD_HASH_CONCURRENCY`); deeply nested JSON is a quick 422, not a
crash; unknown query parameters cost nothing.
"""

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.core.config import Settings
from app.core.security import PasswordHasher
from app.products.models import Product
from app.users.models import User
from tests.conftest import make_settings
from tests.security.common import operations, snapshot
from tests.support import (
    Account,
    DatabaseProbe,
    assert_problem,
    client_for,
    error_locations,
    login,
    register,
)

SMALL_LIMIT = 1024  # the smallest MAX_BODY_BYTES the settings accept
JSON = {"Content-Type": "application/json"}


class CountingHasher(PasswordHasher):
    """The service's hasher, counting every hash and verification it is asked for."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.calls = 0

    async def hash(self, password: str) -> str:
        self.calls += 1
        return await super().hash(password)

    async def verify(self, password: str, password_hash: str) -> tuple[bool, str | None]:
        self.calls += 1
        return await super().verify(password, password_hash)


@pytest.fixture
def hasher(app: FastAPI, settings: Settings) -> CountingHasher:
    counting = CountingHasher(settings)
    app.state.password_hasher = counting
    return counting


class CountingBody:
    """A streamed request body that remembers how much of it the server pulled."""

    def __init__(self, total: int, chunk: int = 256) -> None:
        self.total, self.chunk, self.sent = total, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.total:
            piece = b" " * min(self.chunk, self.total - self.sent)
            self.sent += len(piece)
            yield piece


@pytest.fixture
async def small_body_client(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(database_url, tmp_path / "small", max_body_bytes=SMALL_LIMIT)
    async with client_for(settings) as (_, client):
        yield client


async def add_rows(app: FastAPI, owner_id: int, count: int) -> None:
    """Products and users straight into the database: many of them, quickly."""
    async with app.state.database.sessionmaker() as session, session.begin():
        session.add_all(Product(name=f"P{i}", price=1, owner_id=owner_id) for i in range(count))
        session.add_all(
            User(username=f"user{i}", email=f"user{i}@example.com", password_hash="-")
            for i in range(count - 1)
        )


async def test_every_list_caps_its_page_at_100(
    app: FastAPI, client: httpx.AsyncClient, admin: Account
) -> None:
    await add_rows(app, admin.id, 101)  # 101 products; 100 users and the admin
    lists = [
        op
        for op in operations(app)
        if any(p["name"] == "limit" for p in op.spec.get("parameters", []))
    ]
    assert {op.path for op in lists} == {"/api/v1/products", "/api/v1/users"}

    for op in lists:
        limit = next(p for p in op.spec["parameters"] if p["name"] == "limit")
        assert (limit["schema"]["maximum"], limit["schema"]["default"]) == (100, 20), op.path

        default = (await client.get(op.path, headers=admin.headers)).json()
        full = (await client.get(op.path, params={"limit": 100}, headers=admin.headers)).json()
        over = await client.get(op.path, params={"limit": 101}, headers=admin.headers)

        assert (len(default["items"]), default["total"]) == (20, 101), op.path
        assert (len(full["items"]), full["limit"]) == (100, 100), op.path
        assert_problem(over, 422)
        assert error_locations(over) == [["query", "limit"]]


async def test_every_body_over_the_limit_is_refused_unread(
    app: FastAPI, small_body_client: httpx.AsyncClient, db: DatabaseProbe
) -> None:
    """Before authentication, too: a stranger cannot make the server buffer a body."""
    with_body = [op for op in operations(app) if "requestBody" in op.spec]
    assert len(with_body) >= 10
    before = await snapshot(db)
    for op in with_body:
        body = CountingBody(total=64 * 1024)
        content_type = next(iter(op.spec["requestBody"]["content"]))
        response = await small_body_client.request(
            op.method,
            op.url(),
            content=body,
            headers={"Content-Type": content_type, "Content-Length": str(body.total)},
        )
        assert_problem(response, 413, str(SMALL_LIMIT))
        assert body.sent == 0, op.key
    assert await snapshot(db) == before


async def test_a_chunked_body_is_cut_off_soon_after_the_limit(
    small_body_client: httpx.AsyncClient, db: DatabaseProbe
) -> None:
    body = CountingBody(total=1024 * 1024)
    response = await small_body_client.post("/api/v1/users", content=body, headers=JSON)
    assert_problem(response, 413)
    assert body.sent <= SMALL_LIMIT + body.chunk
    assert await db.scalar(select(func.count()).select_from(User)) == 0


async def test_the_search_text_is_capped_at_100_characters(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/products", params={"q": "a" * 100})).status_code == 200
    over = await client.get("/api/v1/products", params={"q": "a" * 101})
    assert_problem(over, 422)
    assert error_locations(over) == [["query", "q"]]


async def test_overlong_passwords_are_refused_before_any_hashing(
    client: httpx.AsyncClient, user: Account, hasher: CountingHasher, db: DatabaseProbe
) -> None:
    before = await snapshot(db)
    long = "p" * 129
    attempts = [
        await register(client, "mallory", long),
        await client.post(
            "/api/v1/users/me/password",
            json={"current_password": user.password, "new_password": long},
            headers=user.headers,
        ),
        await client.post(
            "/api/v1/users/me/password",
            json={"current_password": "p" * 1025, "new_password": "long enough"},
            headers=user.headers,
        ),
    ]
    for response in attempts:
        assert_problem(response, 422)
    for password in ("p" * 1025, "p" * 100_000):
        refused = await login(client, user.username, password)
        assert_problem(refused, 400)
        assert refused.json()["error"] == "invalid_request"
    assert hasher.calls == 0
    assert await snapshot(db) == before

    assert (await register(client, "mallory", "p" * 128)).status_code == 201
    assert hasher.calls == 1


async def test_a_locked_account_costs_no_hashing(
    client: httpx.AsyncClient, user: Account, other_user: Account, hasher: CountingHasher
) -> None:
    for _ in range(5):  # LOGIN_MAX_FAILURES
        assert_problem(await login(client, user.username, "a wrong guess"), 400)
    calls = hasher.calls

    for _ in range(10):
        assert_problem(await login(client, user.username, "another guess"), 429)

    assert hasher.calls == calls
    # The lock is per account: a flood against Alice does not lock Bob out.
    assert (await login(client, other_user.username, other_user.password)).status_code == 200


class PeakTracker:
    """Wraps passlib's context and records how many hashes ran at the same moment."""

    def __init__(self, context: Any) -> None:
        self._context = context
        self._lock = threading.Lock()
        self.current = 0
        self.peak = 0

    @contextmanager
    def _running(self) -> Iterator[None]:
        with self._lock:
            self.current += 1
            self.peak = max(self.peak, self.current)
        try:
            time.sleep(0.05)  # long enough for the others to pile up, if they may
            yield
        finally:
            with self._lock:
                self.current -= 1

    def hash(self, password: str) -> str:
        with self._running():
            result: str = self._context.hash(password)
            return result

    def verify_and_update(self, password: str, password_hash: str) -> Any:
        with self._running():
            return self._context.verify_and_update(password, password_hash)


async def test_hashing_runs_in_a_bounded_number_of_threads(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path / "bounded", password_hash_concurrency=2)
    async with client_for(settings) as (app, client):
        tracker = PeakTracker(app.state.password_hasher._context)
        app.state.password_hasher._context = tracker

        responses = await asyncio.gather(*(register(client, f"user{i}") for i in range(8)))

        assert [r.status_code for r in responses] == [201] * 8
        assert 1 <= tracker.peak <= 2


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 200_000 + b"]" * 200_000,
        b'{"a":' * 150_000 + b"1" + b"}" * 150_000,
        b'{"username": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
    ids=["arrays", "objects", "inside a field"],
)
async def test_deeply_nested_json_is_a_quick_422(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, body: bytes
) -> None:
    before = await snapshot(db)
    for url, headers in (("/api/v1/users", JSON), ("/api/v1/products", {**JSON, **user.headers})):
        # A guard against a hang, not a timing assertion.
        response = await asyncio.wait_for(client.post(url, content=body, headers=headers), 30)
        assert_problem(response, 422)
        assert error_locations(response) == [["body"]]
    assert await snapshot(db) == before
    assert (await client.get("/health/live")).status_code == 200


async def test_thousands_of_unknown_query_parameters_are_ignored(
    client: httpx.AsyncClient, user: Account
) -> None:
    params = [(f"p{i}", "x" * 8) for i in range(3000)]
    products = await client.get("/api/v1/products", params=params)
    me = await client.get("/api/v1/users/me", params=params, headers=user.headers)

    assert products.status_code == 200
    assert set(products.json()) == {"items", "total", "limit", "offset"}
    assert products.json()["limit"] == 20
    assert me.json()["id"] == user.id


async def test_a_422_is_not_much_larger_than_the_request(client: httpx.AsyncClient) -> None:
    body = json.dumps({f"k{i}": 1 for i in range(40_000)}).encode()
    assert len(body) < 1024 * 1024

    response = await client.post("/api/v1/users", content=body, headers=JSON)

    assert_problem(response, 422)
    assert len(response.content) <= 2 * len(body)
