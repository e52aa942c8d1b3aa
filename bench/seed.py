"""The benchmark's data: a fresh PostgreSQL database, migrated, seeded deterministically.

Users are `bench0001` .. `bench1000`, all with the password `PASSWORD`; its
argon2id hash is computed once, at the service's production cost, and the
same hash is stored for every user (1,000 hashes would take about a minute).
Products 1 .. N have names like "Oak teapot 17", owners spread round-robin
over the users, version 1, and fixed timestamps; every value comes from a
`random.Random(seed)`, so two runs with the same seed hold the same rows.
Rows are loaded with COPY through asyncpg.
"""

from __future__ import annotations

import random
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[1]

USERS = 1_000
PRODUCTS = 10_000
PASSWORD = "bench-password-1"  # noqa: S105  (the seeded accounts' password, not a secret)
SEARCH_TERM = "teapot"  # in the name of about 1 product in 40, and in some descriptions
COLOURS = ("Red", "White", "Oak", "Steel", "Blue", "Green", "Black", "Copper")
WORDS = (
    *("espresso", "lamp", "kettle", "notebook", "chair", "candle", "teapot", "scarf"),
    *("mug", "bowl", "vase", "stool", "rug", "clock", "pen", "jar", "tray", "fork"),
    *("spoon", "knife", "plate", "glass", "bottle", "basket", "mirror", "shelf"),
    *("pillow", "blanket", "towel", "apron", "brush", "comb", "soap", "sponge"),
    *("ladle", "whisk", "grater", "sieve", "pan", "pot"),
)
ADJECTIVES = ("sturdy", "light", "handmade", "classic", "compact", "durable", "simple")
CREATED = datetime(2026, 1, 1, tzinfo=UTC)


class SeedError(Exception):
    """The database could not be recreated, migrated or seeded."""


@dataclass(frozen=True)
class Seeded:
    users: int
    products: int
    search_matches: int


def username(user_id: int) -> str:
    return f"bench{user_id:04d}"


def owner_of(product_id: int, users: int) -> int:
    return (product_id - 1) % users + 1


def database_name(database_url: str) -> str:
    name = database_url.rsplit("/", 1)[-1].split("?", 1)[0]
    if not database_url.startswith(("postgresql://", "postgres://")) or not re.fullmatch(
        r"[A-Za-z0-9_]+", name
    ):
        raise SeedError("the database URL must be postgresql://.../<name of letters, digits, _>")
    return name


def server_url(database_url: str) -> str:
    """The same server's `postgres` database, to drop and create the benchmark's from."""
    return database_url.rsplit("/", 1)[0] + "/postgres"


async def recreate_database(database_url: str) -> None:
    name = database_name(database_url)
    try:
        connection = await asyncpg.connect(server_url(database_url), timeout=5)
    except (OSError, asyncpg.PostgresError) as error:
        raise SeedError(f"PostgreSQL is unreachable or refused: {error}") from None
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def drop_database(database_url: str) -> None:
    connection = await asyncpg.connect(server_url(database_url), timeout=5)
    try:
        await connection.execute(
            f'DROP DATABASE IF EXISTS "{database_name(database_url)}" WITH (FORCE)'
        )
    finally:
        await connection.close()


def production_password_hash(password: str) -> str:
    """The hash the service would store, at its default (production) argon2 cost."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from app.core.config import Settings

    defaults = Settings.model_fields
    from passlib.context import CryptContext

    context = CryptContext(
        schemes=["argon2"],
        argon2__type="ID",
        argon2__memory_cost=defaults["password_hash_memory_kib"].default,
        argon2__rounds=defaults["password_hash_iterations"].default,
        argon2__parallelism=defaults["password_hash_parallelism"].default,
    )
    digest: str = context.hash(password)
    return digest


def _price(rng: random.Random) -> Decimal:
    return Decimal(rng.randrange(100, 50_000)) / 100


async def seed(database_url: str, *, users: int, products: int, random_seed: int = 1) -> Seeded:
    """Loads the users and products into a freshly migrated database."""
    rng = random.Random(random_seed)  # noqa: S311  (test data, not secrets)
    password_hash = production_password_hash(PASSWORD)
    user_rows = [
        (
            n,
            username(n),
            f"{username(n)}@example.com",
            f"Bench User {n}",
            password_hash,
            "user",
            True,
            1,
            CREATED + timedelta(seconds=n),
            CREATED + timedelta(seconds=n),
        )
        for n in range(1, users + 1)
    ]
    product_rows = []
    matches = 0
    for n in range(1, products + 1):
        word = rng.choice(WORDS)
        other = rng.choice(WORDS)
        name = f"{rng.choice(COLOURS)} {word} {n}"
        description = f"A {rng.choice(ADJECTIVES)} {word}; goes well with a {other}."
        matches += SEARCH_TERM in name.lower() or SEARCH_TERM in description.lower()
        price = _price(rng)
        at = CREATED + timedelta(minutes=n)
        product_rows.append(
            (
                n,
                name,
                description,
                price,
                (price * Decimal("0.19")).quantize(Decimal("0.01")),
                f"SKU-{n:06d}",
                owner_of(n, users),
                1,
                at,
                at,
            )
        )
    connection = await asyncpg.connect(database_url, timeout=5)
    try:
        async with connection.transaction():
            await connection.copy_records_to_table(
                "users",
                records=user_rows,
                columns=[
                    *("id", "username", "email", "full_name", "password_hash", "role"),
                    *("is_active", "token_version", "created_at", "updated_at"),
                ],
            )
            await connection.copy_records_to_table(
                "products",
                records=product_rows,
                columns=[
                    *("id", "name", "description", "price", "tax", "sku", "owner_id"),
                    *("version", "created_at", "updated_at"),
                ],
            )
            for table in ("users", "products"):
                await connection.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                    f"(SELECT max(id) FROM {table}))"
                )
        await connection.execute("VACUUM ANALYZE users")
        await connection.execute("VACUUM ANALYZE products")
    finally:
        await connection.close()
    return Seeded(users=users, products=products, search_matches=matches)
