"""Idempotent creates: `POST /api/v1/products` with an `Idempotency-Key` header.

The contract (the project's issue, written into the OpenAPI document): a key
of 1 to 255 visible ASCII characters, kept per user for 24 hours. A retry
with the same key and the same body gets the first response again (status,
body, `Location`, `ETag`, plus `Idempotent-Replayed: true`) and creates
nothing; the same key with another body gets 422; a retry while the first
request is still running gets 409 (PostgreSQL; SQLite serialises the two,
so the retry waits and then gets the stored response). A failed request
stores nothing. `python -m app purge` deletes expired keys. Without the
header, creates behave exactly as before.
"""

import asyncio
import hashlib
import os
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update
from sqlalchemy.engine import make_url

from app.core.database import Database
from app.core.models import utc_now
from app.idempotency.models import IdempotencyKey
from app.products.models import Product
from tests.conftest import TEST_SECRET_KEY, make_settings
from tests.products.helpers import PRODUCTS, count_products, create_product, product_url
from tests.support import (
    Account,
    DatabaseProbe,
    assert_problem,
    assert_unauthenticated,
    client_for,
    create_account,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BODY = {"name": "Espresso cup", "price": "12.50", "sku": "CUP-080-WHT"}
KEY = "6d1f0a52-9c1e-4d8b-a7f3-2b9e4c5d6e7f"
REPLAYED = "idempotent-replayed"
SQLITE_WAITS = (
    "409 for a request still running is PostgreSQL's: SQLite runs one write transaction at a "
    "time, so a retry waits for the first and then gets its stored response"
)


async def post(
    client: httpx.AsyncClient,
    account: Account,
    body: dict[str, Any],
    key: str | bytes | None = KEY,
) -> httpx.Response:
    headers: dict[str, str | bytes] = {**account.headers}
    if key is not None:
        headers["Idempotency-Key"] = key
    return await client.post(PRODUCTS, json=body, headers=headers)


async def stored_keys(db: DatabaseProbe) -> list[IdempotencyKey]:
    return list(await db.all(select(IdempotencyKey).order_by(IdempotencyKey.id)))


async def expire_keys(app: FastAPI, *keys: str) -> None:
    """Moves the keys' expiry into the past, as 24 hours passing would."""
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        await session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key.in_(keys))
            .values(expires_at=utc_now() - timedelta(seconds=1))
        )


def assert_same_response(replay: httpx.Response, first: httpx.Response) -> None:
    assert replay.status_code == first.status_code
    assert replay.content == first.content
    assert replay.headers["content-type"] == first.headers["content-type"]
    assert replay.headers["location"] == first.headers["location"]
    assert replay.headers["etag"] == first.headers["etag"]
    assert replay.headers[REPLAYED] == "true"


def postgres_dsn(database_url: str) -> str:
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


# --- Retries -----------------------------------------------------------------


async def test_a_retry_with_the_same_key_gets_the_first_response_and_creates_nothing(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    first = await post(client, user, BODY)
    assert first.status_code == 201, first.text
    assert REPLAYED not in first.headers
    product = first.json()
    assert first.headers["location"] == product_url(product["id"])
    assert first.headers["etag"] == '"1"'
    assert (product["name"], product["price"], product["owner_id"]) == (
        "Espresso cup",
        12.5,
        user.id,
    )

    replay = await post(client, user, BODY)

    assert_same_response(replay, first)
    assert await count_products(db) == 1
    [key] = await stored_keys(db)
    assert (key.user_id, key.key, key.status_code) == (user.id, KEY, 201)
    assert key.location == first.headers["location"]
    assert key.expires_at - key.created_at == timedelta(hours=24)


async def test_a_replay_is_the_first_response_even_after_the_product_changed(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    first = await post(client, user, BODY)
    assert first.status_code == 201, first.text
    changed = await client.patch(
        first.headers["location"], json={"name": "Renamed"}, headers=user.headers
    )
    assert changed.status_code == 200

    replay = await post(client, user, BODY)

    assert_same_response(replay, first)
    assert replay.json()["name"] == "Espresso cup"
    assert await count_products(db) == 1


async def test_the_same_body_written_differently_is_the_same_request(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    first = await post(client, user, {"name": "Espresso cup", "price": "12.50"})
    assert first.status_code == 201, first.text

    # A number instead of a numeric string, members in another order, and an
    # optional field sent with the value it takes when left out.
    replay = await post(client, user, {"price": 12.5, "description": None, "name": "Espresso cup"})

    assert_same_response(replay, first)
    assert await count_products(db) == 1


@pytest.mark.parametrize(
    "changed",
    [{"price": "12.51"}, {"name": "Espresso mug"}, {"sku": None}, {"tax": "1.00"}],
    ids=["price", "name", "sku-left-out", "tax-added"],
)
async def test_the_same_key_with_a_different_body_gets_422(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, changed: dict[str, Any]
) -> None:
    first = await post(client, user, BODY)
    assert first.status_code == 201, first.text

    reused = await post(client, user, {**BODY, **changed})

    body = assert_problem(reused, 422, "different request")
    assert REPLAYED not in reused.headers
    assert [error["loc"] for error in body["errors"]] == [["header", "Idempotency-Key"]]
    assert await count_products(db) == 1
    [key] = await stored_keys(db)
    assert key.body == first.text
    # The key still names the first request, which still replays.
    assert_same_response(await post(client, user, BODY), first)


async def test_a_key_is_per_user_so_another_user_with_it_creates_a_second_product(
    client: httpx.AsyncClient, user: Account, other_user: Account, db: DatabaseProbe
) -> None:
    mine = await post(client, user, {"name": "Cup", "price": 1})
    theirs = await post(client, other_user, {"name": "Cup", "price": 1})

    assert (mine.status_code, theirs.status_code) == (201, 201), theirs.text
    assert REPLAYED not in theirs.headers
    assert mine.json()["id"] != theirs.json()["id"]
    assert theirs.json()["owner_id"] == other_user.id
    assert await count_products(db) == 2
    assert sorted(k.user_id for k in await stored_keys(db)) == sorted([user.id, other_user.id])


async def test_without_a_key_every_post_creates_a_product(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    body = {"name": "Cup", "price": 1}
    first = await post(client, user, body, key=None)
    second = await post(client, user, body, key=None)

    assert (first.status_code, second.status_code) == (201, 201)
    assert REPLAYED not in first.headers
    assert REPLAYED not in second.headers
    assert first.json()["id"] != second.json()["id"]
    assert await count_products(db) == 2
    assert await stored_keys(db) == []


async def test_a_key_needs_a_signed_in_user(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    first = await post(client, user, BODY)
    assert first.status_code == 201

    anonymous = await client.post(PRODUCTS, json=BODY, headers={"Idempotency-Key": KEY})

    assert_unauthenticated(anonymous)
    assert "location" not in anonymous.headers
    assert await count_products(db) == 1


# --- The key itself ----------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["k" * 256, "", "two words", "tab\there", "cl\u00e9".encode(), b"del\x7f"],
    ids=["256-characters", "empty", "space", "tab", "non-ascii", "control"],
)
async def test_an_invalid_key_gets_422_and_creates_nothing(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, key: str | bytes
) -> None:
    response = await post(client, user, BODY, key=key)

    body = assert_problem(response, 422)
    assert [error["loc"] for error in body["errors"]] == [["header", "Idempotency-Key"]]
    assert await count_products(db) == 0
    assert await stored_keys(db) == []


async def test_a_key_of_255_visible_ascii_characters_is_accepted(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    visible = "".join(chr(c) for c in range(0x21, 0x7F))  # 94 characters, "!" to "~"
    key = (visible * 3)[:255]

    first = await post(client, user, BODY, key=key)
    replay = await post(client, user, BODY, key=key)

    assert first.status_code == 201, first.text
    assert_same_response(replay, first)
    [stored] = await stored_keys(db)
    assert stored.key == key


# --- Lifetime ----------------------------------------------------------------


@pytest.mark.parametrize("same_body", [True, False], ids=["same-body", "other-body"])
async def test_after_24_hours_the_key_is_forgotten_and_creates_again(
    client: httpx.AsyncClient, app: FastAPI, user: Account, db: DatabaseProbe, same_body: bool
) -> None:
    body = {"name": "Cup", "price": 1}
    first = await post(client, user, body)
    assert first.status_code == 201
    await expire_keys(app, KEY)

    second_body = body if same_body else {"name": "Mug", "price": 2}
    again = await post(client, user, second_body)

    assert again.status_code == 201, again.text
    assert REPLAYED not in again.headers
    assert again.json()["id"] != first.json()["id"]
    assert await count_products(db) == 2
    [key] = await stored_keys(db)
    assert key.body == again.text
    assert key.expires_at > utc_now() + timedelta(hours=23)
    # The new response is the one now replayed.
    assert_same_response(await post(client, user, second_body), again)


async def test_a_failed_first_attempt_stores_nothing_and_its_retry_runs_again(
    client: httpx.AsyncClient, user: Account, other_user: Account, db: DatabaseProbe
) -> None:
    taken = await create_product(client, other_user, sku=BODY["sku"])

    refused = await post(client, user, BODY)

    assert_problem(refused, 409, "sku is already taken")
    assert await stored_keys(db) == []
    deleted = await client.delete(product_url(taken["id"]), headers=other_user.headers)
    assert deleted.status_code == 204

    retried = await post(client, user, BODY)

    assert retried.status_code == 201, retried.text
    assert REPLAYED not in retried.headers
    assert retried.json()["sku"] == BODY["sku"]
    assert await count_products(db) == 1
    [key] = await stored_keys(db)
    assert key.body == retried.text


async def test_deleting_the_user_deletes_their_keys(
    client: httpx.AsyncClient, user: Account, other_user: Account, db: DatabaseProbe
) -> None:
    assert (await post(client, user, BODY)).status_code == 201
    assert (await post(client, other_user, {"name": "Mug", "price": 3})).status_code == 201

    deleted = await client.delete("/api/v1/users/me", headers=user.headers)

    assert deleted.status_code == 204
    assert [k.user_id for k in await stored_keys(db)] == [other_user.id]


async def test_purge_deletes_expired_keys_only(
    client: httpx.AsyncClient,
    app: FastAPI,
    user: Account,
    db: DatabaseProbe,
    database_url: str,
    tmp_path: Path,
) -> None:
    for key in ("old", "fresh"):
        response = await post(client, user, {"name": key, "price": 1}, key=key)
        assert response.status_code == 201
    await expire_keys(app, "old")

    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(PROJECT_ROOT),
        "ENVIRONMENT": "test",
        "SECRET_KEY": TEST_SECRET_KEY,
        "DATABASE_URL": database_url,
        "DATA_DIR": str(tmp_path / "purge"),
        "LOG_FORMAT": "text",
    }
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app", "purge"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "1 idempotency keys" in result.stdout + result.stderr
    assert [k.key for k in await stored_keys(db)] == ["fresh"]
    assert await count_products(db) == 2  # the products stay; only the keys go


# --- Concurrency -------------------------------------------------------------


@pytest.mark.concurrency
async def test_concurrent_requests_with_one_key_create_one_product(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, backend: str
) -> None:
    responses = await asyncio.gather(*(post(client, user, BODY) for _ in range(10)))

    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}, [r.text for r in responses]
    created = [r for r in responses if r.status_code == 201]
    originals = [r for r in created if REPLAYED not in r.headers]
    assert len(originals) == 1
    for replay in created:
        if replay is not originals[0]:
            assert_same_response(replay, originals[0])
    for busy in (r for r in responses if r.status_code == 409):
        assert_problem(busy, 409, "still being processed")
    if backend == "sqlite":
        # Transactions run one at a time: every retry waits, then replays.
        assert statuses == {201: 10}
    assert await count_products(db) == 1
    assert len(await stored_keys(db)) == 1


async def _wait_until_a_backend_waits_for_a_lock(connection: asyncpg.Connection) -> None:
    for _ in range(200):
        waiting = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        if waiting:
            return
        await asyncio.sleep(0.05)
    pytest.fail("the first request never reached the row held by the test")


async def test_a_retry_while_the_first_request_runs_gets_409_at_once(
    database_url: str, tmp_path: Path, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip(SQLITE_WAITS)
    # A generous statement timeout: the first request is held on purpose.
    settings = make_settings(database_url, tmp_path / "data", db_command_timeout=30)
    async with client_for(settings) as (app, client):
        user = await create_account(client, "alice")
        holder = await asyncpg.connect(postgres_dsn(database_url))
        observer = await asyncpg.connect(postgres_dsn(database_url))
        try:
            # An uncommitted product with the same sku: the first request's
            # insert waits for this transaction, inside its own transaction.
            await holder.execute("BEGIN")
            await holder.execute(
                "INSERT INTO products (name, price, sku, owner_id, version, created_at, "
                "updated_at) VALUES ('Held', 1, $1, $2, 1, now(), now())",
                BODY["sku"],
                user.id,
            )
            first_task = asyncio.create_task(post(client, user, BODY))
            await _wait_until_a_backend_waits_for_a_lock(observer)

            retry = await post(client, user, BODY)
            other_key = await post(client, user, {"name": "Mug", "price": 2}, key="another-key")

            assert_problem(retry, 409, "still being processed")
            # The lock is the key's, not the user's: another key goes through.
            assert other_key.status_code == 201, other_key.text
            assert not first_task.done()
            await holder.execute("ROLLBACK")
            first = await first_task
        finally:
            await holder.close()
            await observer.close()

        assert first.status_code == 201, first.text
        assert REPLAYED not in first.headers
        assert_same_response(await post(client, user, BODY), first)
        db = DatabaseProbe(app.state.database)
        assert await count_products(db) == 2
        assert sorted(k.key for k in await stored_keys(db)) == sorted([KEY, "another-key"])


def documented_lock_id(user_id: int, key: str) -> int:
    """The advisory lock the service takes: sha256 of "idem:{user_id}:{key}", first 8 bytes."""
    digest = hashlib.sha256(f"idem:{user_id}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def test_a_key_held_elsewhere_gets_409_until_released(
    client: httpx.AsyncClient,
    user: Account,
    other_user: Account,
    db: DatabaseProbe,
    database_url: str,
    backend: str,
) -> None:
    if backend != "postgresql":
        pytest.skip(SQLITE_WAITS)
    holder = await asyncpg.connect(postgres_dsn(database_url))
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", documented_lock_id(user.id, KEY))

        busy = await post(client, user, BODY)
        theirs = await post(client, other_user, {"name": "Mug", "price": 2})

        assert_problem(busy, 409, "still being processed")
        assert theirs.status_code == 201, theirs.text
        assert await db.scalar(select(func.count()).where(Product.owner_id == user.id)) == 0
        await holder.execute("SELECT pg_advisory_unlock($1)", documented_lock_id(user.id, KEY))
    finally:
        await holder.close()

    retried = await post(client, user, BODY)

    assert retried.status_code == 201, retried.text
    assert REPLAYED not in retried.headers
    assert await count_products(db) == 2


# --- Documentation -----------------------------------------------------------


async def test_the_openapi_document_declares_the_key_and_what_it_does(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    operation = document["paths"]["/api/v1/products"]["post"]

    [header] = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    assert header["in"] == "header"
    assert header["required"] is False
    assert "24 hours" in header["description"]
    schema = next(s for s in header["schema"]["anyOf"] if s.get("type") == "string")
    assert (schema["minLength"], schema["maxLength"]) == (1, 255)
    assert schema["pattern"] == "^[\\x21-\\x7E]+$"

    responses = operation["responses"]
    assert "Idempotent-Replayed" in responses["201"]["headers"]
    assert "Idempotency-Key" in responses["409"]["description"]
    assert "Idempotency-Key" in responses["422"]["description"]


async def test_browsers_may_send_the_key_and_read_the_replay_header(
    database_url: str, tmp_path: Path
) -> None:
    origin = "https://shop.example"
    settings = make_settings(database_url, tmp_path / "data", cors_origins=[origin])
    async with client_for(settings) as (_, client):
        preflight = await client.options(
            PRODUCTS,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
            },
        )
        account = await create_account(client, "alice")
        created = await client.post(
            PRODUCTS,
            json=BODY,
            headers={**account.headers, "Idempotency-Key": KEY, "Origin": origin},
        )

    assert preflight.status_code == 200, preflight.text
    allowed = {
        h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")
    }
    assert "idempotency-key" in allowed
    assert created.status_code == 201
    exposed = {
        h.strip().lower() for h in created.headers["access-control-expose-headers"].split(",")
    }
    assert "idempotent-replayed" in exposed
