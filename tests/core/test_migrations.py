"""Migrations (ARCHITECTURE.md: "the same migrations build both" backends).

On SQLite and PostgreSQL the migrated schema matches the models exactly
(Alembic's autogenerate finds nothing to add, drop or alter), the
case-insensitive unique indexes exist, the history is one straight line,
and downgrading to nothing then upgrading again gives a working database.
"""

import asyncio
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

import app.account.models
import app.auth.models
import app.idempotency.models
import app.mail.models
import app.products.models
import app.users.models  # noqa: F401  (registers every table on the metadata)
from app.core.database import Database
from app.core.migrations import alembic_config, head_revision, upgrade
from app.core.models import Base
from tests.conftest import make_settings
from tests.support import DEFAULT_PASSWORD, client_for, create_account, login

TABLES = {
    "users",
    "products",
    "refresh_families",
    "refresh_tokens",
    "login_failures",
    "idempotency_keys",
    "account_tokens",
    "mail_outbox",
}
# SQLite cannot reflect expression indexes; Alembic says so and skips them.
_SKIPPED_ON_SQLITE = (
    "ignore:.*expression-based index:UserWarning",
    "ignore:Skipped unsupported reflection of expression-based index",
)


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, Base.metadata))


async def _run(database_url: str, tmp_path: Path, check: Any) -> Any:
    database = Database(make_settings(database_url, tmp_path / "data"))
    try:
        async with database.engine.connect() as connection:
            return await connection.run_sync(check)
    finally:
        await database.dispose()


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def _revision(connection: Connection) -> str | None:
    if "alembic_version" not in _tables(connection):
        return None
    value = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return str(value) if value is not None else None


@pytest.mark.filterwarnings(*_SKIPPED_ON_SQLITE)
async def test_the_migrated_schema_matches_the_models(database_url: str, tmp_path: Path) -> None:
    assert await _run(database_url, tmp_path, _differences) == []
    assert await _run(database_url, tmp_path, _revision) == head_revision()


async def test_usernames_and_emails_have_case_insensitive_unique_indexes(
    database_url: str, tmp_path: Path, backend: str
) -> None:
    def index_definitions(connection: Connection) -> dict[str, str]:
        if backend == "sqlite":
            rows = connection.execute(
                text("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
            )
        else:
            rows = connection.execute(
                text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'users'")
            )
        return {str(name): str(sql).lower() for name, sql in rows}

    indexes = await _run(database_url, tmp_path, index_definitions)
    for name, column in (
        ("uq_users_username_lower", "username"),
        ("uq_users_email_lower", "email"),
    ):
        assert "unique" in indexes[name]
        definition = indexes[name].replace('"', "").replace("(", "").replace(")", "")
        assert f"lower{column}" in definition.replace("::text", "")


def test_the_history_is_a_single_line_with_downgrades() -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    assert scripts.get_heads() == [head_revision()]
    assert len(scripts.get_bases()) == 1
    for revision in scripts.walk_revisions():
        source = Path(revision.path).read_text()
        # A downgrade that does something, not a stub.
        assert "op." in source[source.index("def downgrade") :], revision.revision


@pytest.mark.filterwarnings(*_SKIPPED_ON_SQLITE)
async def test_downgrade_to_base_then_upgrade_to_head(database_url: str, tmp_path: Path) -> None:
    config = alembic_config(database_url)
    config.attributes["configure_logger"] = False
    await asyncio.to_thread(command.downgrade, config, "base")

    left = await _run(database_url, tmp_path, _tables)
    assert left & TABLES == set()
    assert await _run(database_url, tmp_path, _revision) is None

    await asyncio.to_thread(upgrade, database_url)
    assert await _run(database_url, tmp_path, _tables) >= TABLES
    assert await _run(database_url, tmp_path, _revision) == head_revision()
    assert await _run(database_url, tmp_path, _differences) == []

    # The rebuilt database works for the service.
    async with client_for(make_settings(database_url, tmp_path / "data")) as (_, client):
        account = await create_account(client, "phoenix")
        created = await client.post(
            "/api/v1/products", json={"name": "Ash", "price": 1}, headers=account.headers
        )
        assert created.status_code == 201
        assert (await client.get("/health/ready")).status_code == 200


@pytest.mark.filterwarnings(*_SKIPPED_ON_SQLITE)
async def test_existing_users_become_unverified_and_the_first_admin_verified(
    database_url: str, tmp_path: Path
) -> None:
    """0004 adds email_verified to a database that already has users."""
    config = alembic_config(database_url)
    config.attributes["configure_logger"] = False
    await asyncio.to_thread(command.downgrade, config, "0003")

    def add_users(connection: Connection) -> None:
        for name, role in (("boss", "admin"), ("carol", "user"), ("other_admin", "admin")):
            connection.execute(
                text(
                    "INSERT INTO users (username, email, password_hash, role, is_active, "
                    "token_version, created_at, updated_at) VALUES (:name, :email, 'x', :role, "
                    ":yes, 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"name": name, "email": f"{name}@example.com", "role": role, "yes": True},
            )
        connection.commit()

    await _run(database_url, tmp_path, add_users)
    await asyncio.to_thread(upgrade, database_url, first_admin_email="BOSS@example.com")

    def verified(connection: Connection) -> dict[str, bool]:
        rows = connection.execute(text("SELECT username, email_verified FROM users"))
        return {str(name): bool(flag) for name, flag in rows}

    assert await _run(database_url, tmp_path, verified) == {
        "boss": True,
        "carol": False,
        "other_admin": False,
    }


async def test_upgrading_an_up_to_date_database_changes_nothing(
    database_url: str, tmp_path: Path
) -> None:
    async with client_for(make_settings(database_url, tmp_path / "data")) as (_, client):
        await create_account(client, "keeper")
        await asyncio.to_thread(upgrade, database_url)
        signed_in = await login(client, "keeper", DEFAULT_PASSWORD)
        assert signed_in.status_code == 200
    assert await _run(database_url, tmp_path, _revision) == head_revision()


async def test_an_unmigrated_database_is_not_ready(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    async with client_for(make_settings(url, tmp_path / "data")) as (_, client):
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.headers["content-type"] == "application/problem+json"
        assert (await client.get("/health/live")).status_code == 200


async def test_search_text_statistics_come_from_a_larger_sample(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    """Migration 0007: the planner's estimate of a search's matches, which
    decides whether the list counts them, rests on 500 histogram entries."""
    if backend != "postgresql":
        pytest.skip("SQLite has no per-column statistics target")

    def target(connection: Connection) -> Any:
        return connection.execute(
            text(
                "SELECT attstattarget FROM pg_attribute"
                " WHERE attrelid = 'products'::regclass AND attname = 'search_text'"
            )
        ).scalar()

    assert await _run(database_url, tmp_path, target) == 500
