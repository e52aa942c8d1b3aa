"""The operations commands, `python -m app migrate | create-admin`, run as a user would run them.

API.md "Users": the start-up step that applies migrations creates the first
admin from FIRST_ADMIN_* if it does not exist and changes nothing if it
does. ARCHITECTURE.md: with ENVIRONMENT=production the service refuses to
start with a missing or sample SECRET_KEY (one line, non-zero exit).
"""

import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import func, select, text

from app.core.database import Database
from app.core.migrations import head_revision
from app.mail.models import OutboxMessage
from app.users.models import Role, User
from tests.conftest import Runner, make_settings
from tests.support import DatabaseProbe, bearer, client_for, register, tokens_for

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "an admin passphrase 42"
FIRST_ADMIN = {
    "FIRST_ADMIN_USERNAME": "boss",
    "FIRST_ADMIN_EMAIL": "boss@example.com",
    "FIRST_ADMIN_PASSWORD": ADMIN_PASSWORD,
}


@asynccontextmanager
async def probe(database_url: str, tmp_path: Path) -> AsyncIterator[DatabaseProbe]:
    database = Database(make_settings(database_url, tmp_path / "probe"))
    try:
        yield DatabaseProbe(database)
    finally:
        await database.dispose()


async def _admin_row(database_url: str, tmp_path: Path, username: str) -> tuple[object, ...]:
    async with probe(database_url, tmp_path) as db:
        user = await db.scalar(select(User).where(User.username == username))
        assert user is not None
        return (
            user.id,
            user.username,
            user.email,
            user.password_hash,
            user.role,
            user.is_active,
            user.token_version,
            user.created_at,
            user.updated_at,
        )


async def _user_count(database_url: str, tmp_path: Path) -> int:
    async with probe(database_url, tmp_path) as db:
        return await db.scalar(select(func.count()).select_from(User)) or 0


async def _login_role(database_url: str, tmp_path: Path, username: str, password: str) -> str:
    """Signs in through the API and returns the role `/users/me` reports."""
    async with client_for(make_settings(database_url, tmp_path / "app")) as (_, client):
        tokens = await tokens_for(client, username, password)
        me = await client.get("/api/v1/users/me", headers=bearer(tokens["access_token"]))
        assert me.status_code == 200
        role: str = me.json()["role"]
        return role


def _create_admin(username: str, email: str, password: str) -> tuple[str, ...]:
    """The arguments of `python -m app create-admin` for this account."""
    options = ("--username", username, "--email", email, "--password", password)
    return ("-m", "app", "create-admin", *options)


async def test_migrate_builds_an_empty_database_and_creates_the_first_admin(
    run_app: Runner,
    tmp_path: Path,
) -> None:
    path = tmp_path / "fresh" / "app.db"
    url = f"sqlite:///{path}"
    result = run_app("-m", "app", "migrate", DATABASE_URL=url, **FIRST_ADMIN)
    assert result.returncode == 0, result.stderr
    assert path.exists()
    assert ADMIN_PASSWORD not in result.stdout + result.stderr

    async_url = f"sqlite+aiosqlite:///{path}"
    async with probe(async_url, tmp_path) as db:
        revision = await db.scalar(select(text("version_num")).select_from(text("alembic_version")))
        assert revision == head_revision()
        admin = await db.scalar(select(User).where(User.username == "boss"))
        assert admin is not None
        assert admin.role == Role.ADMIN
        assert admin.email == "boss@example.com"
        assert admin.is_active
        assert admin.email_verified  # an operator set the address; no message is sent
        assert ADMIN_PASSWORD not in admin.password_hash
        assert await db.scalar(select(func.count()).select_from(OutboxMessage)) == 0
    assert await _login_role(async_url, tmp_path, "boss", ADMIN_PASSWORD) == "admin"


async def test_migrate_again_changes_nothing(run_app: Runner, tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    url = f"sqlite+aiosqlite:///{path}"
    first = run_app("-m", "app", "migrate", DATABASE_URL=url, **FIRST_ADMIN)
    assert first.returncode == 0, first.stderr
    before = await _admin_row(url, tmp_path, "boss")

    # Even with a different password in the settings, the admin stays as it was.
    again = run_app(
        "-m",
        "app",
        "migrate",
        DATABASE_URL=url,
        **{**FIRST_ADMIN, "FIRST_ADMIN_PASSWORD": "x" * 20},
    )
    assert again.returncode == 0, again.stderr
    assert await _admin_row(url, tmp_path, "boss") == before
    assert await _user_count(url, tmp_path) == 1


async def test_migrate_on_a_migrated_database_creates_the_admin_once(
    run_app: Runner, database_url: str, tmp_path: Path
) -> None:
    first = run_app("-m", "app", "migrate", DATABASE_URL=database_url, **FIRST_ADMIN)
    assert first.returncode == 0, first.stderr
    before = await _admin_row(database_url, tmp_path, "boss")
    assert before[4] == Role.ADMIN

    second = run_app("-m", "app", "migrate", DATABASE_URL=database_url, **FIRST_ADMIN)
    assert second.returncode == 0, second.stderr
    assert await _admin_row(database_url, tmp_path, "boss") == before
    assert await _user_count(database_url, tmp_path) == 1
    assert await _login_role(database_url, tmp_path, "boss", ADMIN_PASSWORD) == "admin"


async def test_migrate_leaves_an_existing_user_of_that_name_alone(
    run_app: Runner, database_url: str, tmp_path: Path
) -> None:
    async with client_for(make_settings(database_url, tmp_path / "app")) as (_, client):
        registered = await register(client, "Boss", "their own pw", email="someone@example.com")
        assert registered.status_code == 201
    before = await _admin_row(database_url, tmp_path, "Boss")

    result = run_app("-m", "app", "migrate", DATABASE_URL=database_url, **FIRST_ADMIN)
    assert result.returncode == 0, result.stderr
    assert await _admin_row(database_url, tmp_path, "Boss") == before
    assert before[4] == Role.USER
    assert await _user_count(database_url, tmp_path) == 1


async def test_migrate_without_first_admin_settings_creates_no_user(
    run_app: Runner, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    result = run_app("-m", "app", "migrate", DATABASE_URL=url)
    assert result.returncode == 0, result.stderr
    assert await _user_count(url, tmp_path) == 0


async def test_migrate_without_a_database_url_uses_sqlite_in_the_data_dir(
    run_app: Runner, tmp_path: Path
) -> None:
    data_dir = tmp_path / "state"
    result = run_app("-m", "app", "migrate", DATA_DIR=str(data_dir), **FIRST_ADMIN)
    assert result.returncode == 0, result.stderr
    database = data_dir / "app.db"
    assert database.exists()
    url = f"sqlite+aiosqlite:///{database}"
    assert await _admin_row(url, tmp_path, "boss")


async def test_create_admin_makes_an_admin_who_can_sign_in(
    run_app: Runner, database_url: str, tmp_path: Path
) -> None:
    result = run_app(
        *_create_admin("ops", "ops@example.com", ADMIN_PASSWORD), DATABASE_URL=database_url
    )
    assert result.returncode == 0, result.stderr
    assert ADMIN_PASSWORD not in result.stdout + result.stderr

    row = await _admin_row(database_url, tmp_path, "ops")
    assert row[2] == "ops@example.com"
    assert row[4] == Role.ADMIN
    assert await _login_role(database_url, tmp_path, "ops", ADMIN_PASSWORD) == "admin"
    assert await _login_role(database_url, tmp_path, "ops@example.com", ADMIN_PASSWORD) == "admin"


async def test_create_admin_refuses_a_taken_name(
    run_app: Runner, database_url: str, tmp_path: Path
) -> None:
    first = run_app(
        *_create_admin("ops", "ops@example.com", ADMIN_PASSWORD), DATABASE_URL=database_url
    )
    assert first.returncode == 0, first.stderr
    before = await _admin_row(database_url, tmp_path, "ops")

    second = run_app(
        *_create_admin("OPS", "other@example.com", "another passphrase"),
        DATABASE_URL=database_url,
    )
    assert second.returncode != 0
    assert "already exists" in second.stderr
    assert await _admin_row(database_url, tmp_path, "ops") == before
    assert await _user_count(database_url, tmp_path) == 1


async def test_create_admin_refuses_an_invalid_account_without_echoing_it(
    run_app: Runner, database_url: str, tmp_path: Path
) -> None:
    result = run_app(*_create_admin("ops", "not-an-email", "short7!"), DATABASE_URL=database_url)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("invalid admin account")
    assert "email" in lines[0]
    assert "password" in lines[0]
    assert "short7!" not in result.stderr + result.stdout
    assert await _user_count(database_url, tmp_path) == 0


def _assert_refused_in_one_line(result: subprocess.CompletedProcess[str], secret: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "SECRET_KEY" in lines[0]
    assert "Traceback" not in result.stderr
    assert secret not in result.stderr + result.stdout


def test_migrate_in_production_with_a_bad_secret_key_exits_with_one_line(
    run_app: Runner, tmp_path: Path
) -> None:
    database = tmp_path / "app.db"
    for secret in ("too-short-Secret", "change-me-to-a-long-random-string-of-at-least-32-bytes"):
        result = run_app(
            "-m",
            "app",
            "migrate",
            ENVIRONMENT="production",
            SECRET_KEY=secret,
            DATABASE_URL=f"sqlite:///{database}",
        )
        _assert_refused_in_one_line(result, secret)
    assert not database.exists()


def test_migrate_in_production_without_a_secret_key_exits_with_one_line(
    run_app: Runner, tmp_path: Path
) -> None:
    result = run_app(
        "-m", "app", "migrate", ENVIRONMENT="production", SECRET_KEY="", DATA_DIR=str(tmp_path)
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "configuration error: SECRET_KEY must be set when ENVIRONMENT=production"
    ]


def test_the_server_refuses_to_start_in_production_with_a_bad_secret_key(
    run_app: Runner, tmp_path: Path
) -> None:
    secret = "too-short-Secret"
    result = run_app(
        "-m",
        "uvicorn",
        "app.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        ENVIRONMENT="production",
        SECRET_KEY=secret,
        DATA_DIR=str(tmp_path),
        timeout=60,
    )
    _assert_refused_in_one_line(result, secret)


def test_gunicorn_stops_instead_of_restarting_workers_with_a_bad_secret_key(
    run_app: Runner,
    tmp_path: Path,
) -> None:
    secret = "too-short-Secret"
    result = run_app(
        "-m",
        "gunicorn",
        "-c",
        str(PROJECT_ROOT / "gunicorn.conf.py"),
        "--bind",
        "127.0.0.1:0",
        "--workers",
        "1",
        "app.main:app",
        ENVIRONMENT="production",
        SECRET_KEY=secret,
        DATA_DIR=str(tmp_path),
        timeout=60,
    )
    assert result.returncode != 0
    assert "configuration error: SECRET_KEY must be at least 32 bytes" in result.stderr
    assert "Traceback" not in result.stderr
    assert secret not in result.stderr + result.stdout


def test_an_unknown_command_is_refused(
    run_app: Runner,
) -> None:
    result = run_app("-m", "app", "frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
