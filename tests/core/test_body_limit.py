"""API.md "General": bodies over `MAX_BODY_BYTES` get 413, without being read whole.

With a declared Content-Length over the limit the server answers before
reading anything; a chunked body (no Content-Length) is counted as it
arrives and refused as soon as it passes the limit. These tests use a
limit of 2048 bytes and count how much of the body the server pulled.
"""

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import func, select

from app.products.models import Product
from app.users.models import User
from tests.core.conftest import ClientFactory
from tests.support import DatabaseProbe, assert_problem, create_account

LIMIT = 2048
CHUNK = 256


class CountingBody:
    """A request body the server pulls chunk by chunk; remembers how much it took."""

    def __init__(self, total: int, chunk: bytes = b"x" * CHUNK) -> None:
        self.total = total
        self.chunk = chunk
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.total:
            piece = self.chunk[: self.total - self.sent]
            self.sent += len(piece)
            yield piece


def _json_of_size(size: int) -> bytes:
    """A valid registration body of exactly `size` bytes (padded with JSON whitespace)."""
    compact = json.dumps(
        {"username": "gina", "email": "gina@example.com", "password": "correct horse"}
    ).encode()
    body = compact[:-1] + b" " * (size - len(compact)) + b"}"
    assert len(body) == size
    return body


@pytest.fixture
async def limited(make_client: ClientFactory) -> httpx.AsyncClient:
    return await make_client(max_body_bytes=LIMIT)


async def test_a_declared_length_over_the_limit_gets_413(
    limited: httpx.AsyncClient, db: DatabaseProbe
) -> None:
    response = await limited.post(
        "/api/v1/users", content=b"x" * (LIMIT + 1), headers={"Content-Type": "application/json"}
    )
    body = assert_problem(response, 413, str(LIMIT))
    assert body["title"] == "Content Too Large"
    assert await db.scalar(select(func.count()).select_from(User)) == 0


async def test_a_declared_length_over_the_limit_is_refused_unread(
    limited: httpx.AsyncClient,
) -> None:
    stream = CountingBody(total=64 * 1024)
    response = await limited.post(
        "/api/v1/users",
        content=stream,
        headers={"Content-Type": "application/json", "Content-Length": str(stream.total)},
    )
    assert_problem(response, 413)
    assert stream.sent == 0


async def test_a_chunked_body_over_the_limit_gets_413_and_is_not_read_to_the_end(
    limited: httpx.AsyncClient, db: DatabaseProbe
) -> None:
    stream = CountingBody(total=1024 * 1024)
    request = limited.build_request(
        "POST", "/api/v1/users", content=stream, headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"

    response = await limited.send(request)

    assert_problem(response, 413, str(LIMIT))
    # The server stopped pulling soon after the limit, long before the end.
    assert LIMIT < stream.sent <= LIMIT + CHUNK
    assert await db.scalar(select(func.count()).select_from(User)) == 0


async def test_a_chunked_form_over_the_limit_gets_413(limited: httpx.AsyncClient) -> None:
    stream = CountingBody(total=512 * 1024, chunk=b"username=" + b"u" * (CHUNK - 9))
    response = await limited.post(
        "/api/v1/auth/token",
        content=stream,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_problem(response, 413)
    assert stream.sent < 512 * 1024


async def test_a_chunked_body_over_the_limit_on_a_protected_route_gets_413(
    limited: httpx.AsyncClient, db: DatabaseProbe
) -> None:
    account = await create_account(limited, "hank")
    stream = CountingBody(total=256 * 1024)
    response = await limited.post(
        "/api/v1/products",
        content=stream,
        headers={**account.headers, "Content-Type": "application/json"},
    )
    assert_problem(response, 413)
    assert stream.sent < 256 * 1024
    assert await db.scalar(select(func.count()).select_from(Product)) == 0


@pytest.mark.parametrize("size", [LIMIT - 1, LIMIT])
async def test_a_body_up_to_the_limit_is_accepted(
    limited: httpx.AsyncClient, db: DatabaseProbe, size: int
) -> None:
    body = _json_of_size(size)
    response = await limited.post(
        "/api/v1/users", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.text
    assert await db.scalar(select(func.count()).select_from(User)) == 1


async def test_a_chunked_body_up_to_the_limit_is_accepted(
    limited: httpx.AsyncClient, db: DatabaseProbe
) -> None:
    body = _json_of_size(LIMIT - 10)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    response = await limited.post(
        "/api/v1/users", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.text
    assert await db.scalar(select(func.count()).select_from(User)) == 1


async def test_one_byte_over_the_limit_is_refused(
    limited: httpx.AsyncClient, db: DatabaseProbe
) -> None:
    response = await limited.post(
        "/api/v1/users",
        content=_json_of_size(LIMIT + 1),
        headers={"Content-Type": "application/json"},
    )
    assert_problem(response, 413)
    assert await db.scalar(select(func.count()).select_from(User)) == 0


async def test_the_default_limit_is_one_mebibyte(client: httpx.AsyncClient) -> None:
    under = await client.post(
        "/api/v1/users", content=b" " * (1024 * 1024), headers={"Content-Type": "application/json"}
    )
    # Read whole and found not to be JSON: a validation error, not a 413.
    assert_problem(under, 422)
    over = await client.post(
        "/api/v1/users",
        content=b" " * (1024 * 1024 + 1),
        headers={"Content-Type": "application/json"},
    )
    assert_problem(over, 413, "1048576")
