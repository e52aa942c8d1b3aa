"""What SQL the service sends for each benchmark scenario, and whether the floor sends the same.

`python -m bench.capture_sql` seeds a small database, runs one request of
each scenario through the service in-process, records every statement its
engine logs (SQLAlchemy's echo: the `sqlalchemy.engine.Engine` logger at
INFO), and compares them with the statements the floor app runs
(`bench/floor/sql.py`). It prints both and exits 1 when they differ: then
copy the captured SQL into `bench/floor/sql.py` and the floor's handlers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench import seed  # noqa: E402
from bench.floor import sql  # noqa: E402

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/storefront_bench_sql"
API = "/api/v1"


class _Statements(logging.Handler):
    """Collects the statements the engine logs, leaving out parameter and timing lines."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(("[", "(")):
            return  # "[generated in 0.0001s] [SQL parameters hidden ...]"
        if message.startswith(NOT_SENT):
            return
        self.lines.append(normalise(message))


# What the engine logs for a connection in autocommit mode (the service's
# reads) but sends nothing for: asyncpg has no transaction to begin or end.
NOT_SENT = ("BEGIN (implicit; DBAPI should not BEGIN", "ROLLBACK using DBAPI connection.rollback()")


def normalise(statement: str) -> str:
    text = " ".join(statement.split())
    return "BEGIN" if text == "BEGIN (implicit)" else text


async def capture(database_url: str) -> dict[str, list[str]]:
    from app.core.config import Settings
    from app.core.migrations import upgrade
    from app.core.security import TokenCodec
    from app.main import create_app

    settings = Settings(
        environment="production",
        database_url=database_url,
        secret_key=secrets.token_urlsafe(48),
        log_level="WARNING",
        _env_file=None,
    )
    await seed.recreate_database(database_url)
    await asyncio.to_thread(upgrade, settings.sqlalchemy_url)
    # The benchmark's own data: what the service sends can depend on it (a
    # page's total is counted, estimated or known from a short last page).
    await seed.seed(database_url, users=seed.USERS, products=seed.PRODUCTS)
    app = create_app(settings)
    token = TokenCodec(settings).issue("access", 1, 1).token
    auth = {"Authorization": f"Bearer {token}"}
    handler = _Statements()
    engine_logger = logging.getLogger("sqlalchemy.engine.Engine")
    engine_logger.addHandler(handler)
    engine_logger.propagate = False

    captured: dict[str, list[str]] = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

        async def one(name: str, send: Callable[[], Awaitable[httpx.Response]]) -> None:
            engine_logger.setLevel(logging.WARNING)
            # Warm-up: the statements of a connection's first use are not the scenario's.
            await client.get(f"{API}/products/2")
            handler.lines.clear()
            engine_logger.setLevel(logging.INFO)
            response = await send()
            engine_logger.setLevel(logging.WARNING)
            if response.status_code >= 400:
                raise SystemExit(f"{name}: {response.status_code} {response.text}")
            captured[name] = list(handler.lines)

        product = {"name": "Captured", "price": "9.99", "sku": "CAPTURED-1"}
        await one("health", lambda: client.get("/health/live"))
        await one("get_product", lambda: client.get(f"{API}/products/4"))
        await one("list_products", lambda: client.get(f"{API}/products"))
        await one("search_products", lambda: client.get(f"{API}/products?q={seed.SEARCH_TERM}"))
        await one("users_me", lambda: client.get(f"{API}/users/me", headers=auth))
        await one(
            "create_product", lambda: client.post(f"{API}/products", json=product, headers=auth)
        )
        await one(
            "patch_product",
            lambda: client.patch(
                f"{API}/products/1", json={"price": "5.55"}, headers={**auth, "If-Match": '"1"'}
            ),
        )
        form = {"username": seed.username(2), "password": seed.PASSWORD, "grant_type": "password"}
        await one("login", lambda: client.post(f"{API}/auth/token", data=form))
    await app.state.database.dispose()
    await seed.drop_database(database_url)
    return captured


def main() -> int:
    database_url = os.environ.get("BENCH_SQL_DATABASE_URL") or DEFAULT_DATABASE_URL
    captured = asyncio.run(capture(database_url))
    differ = False
    for name, statements in captured.items():
        floor = [normalise(statement) for statement in sql.SCENARIOS.get(name, ())]
        same = floor == statements
        differ |= not same
        print(f"== {name}: {'same as the floor' if same else 'DIFFERS from the floor'}")
        for statement in statements:
            print(f"   service: {statement}")
        if not same:
            for statement in floor:
                print(f"   floor:   {statement}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
