"""Operations commands: `python -m app migrate | create-admin | purge`."""

import argparse
import asyncio
import getpass
import logging
import sys
from datetime import timedelta

from pydantic import ValidationError

from app.auth.repository import LoginFailureRepository, RefreshTokenRepository
from app.core.config import Settings, describe_settings_error, get_settings
from app.core.database import Database
from app.core.logging import configure_logging
from app.core.migrations import upgrade
from app.core.models import utc_now
from app.core.security import PasswordHasher
from app.idempotency.repository import IdempotencyKeyRepository
from app.users.service import UserService

logger = logging.getLogger("app.cli")


async def _create_admin(settings: Settings, username: str, email: str, password: str) -> bool:
    database = Database(settings)
    try:
        async with database.sessionmaker() as session, session.begin():
            service = UserService(session, PasswordHasher(settings), settings)
            return await service.ensure_admin(username, email, password)
    finally:
        await database.dispose()


async def _purge(settings: Settings) -> tuple[int, int, int]:
    database = Database(settings)
    now = utc_now()
    try:
        async with database.sessionmaker() as session, session.begin():
            families = await RefreshTokenRepository(session).delete_expired(now)
            failures = await LoginFailureRepository(session).delete_before(
                now - timedelta(seconds=settings.login_window_seconds)
            )
            keys = await IdempotencyKeyRepository(session).delete_expired(now)
            return families, failures, keys
    finally:
        await database.dispose()


def migrate(settings: Settings) -> None:
    """Applies every migration, then creates the first admin from FIRST_ADMIN_* if missing."""
    upgrade(settings.sqlalchemy_url)
    logger.info("database schema is at the newest revision")
    username, email = settings.first_admin_username, settings.first_admin_email
    password = settings.first_admin_password
    if not (username and email and password):
        if username or email or password:
            logger.warning("FIRST_ADMIN_USERNAME, _EMAIL and _PASSWORD are needed together")
        return
    created = asyncio.run(_create_admin(settings, username, email, password.get_secret_value()))
    if created:
        logger.info("created the first admin %r", username)
    else:
        logger.info("a user named %r or with that email exists; left unchanged", username)


def create_admin(settings: Settings, username: str, email: str, password: str | None) -> None:
    if password is None:
        password = getpass.getpass("Password for the new admin: ")
    if asyncio.run(_create_admin(settings, username, email, password)):
        logger.info("created admin %r", username)
    else:
        logger.error("a user named %r or with that email already exists", username)
        raise SystemExit(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply migrations, then create the first admin")
    admin = commands.add_parser("create-admin", help="create an admin account")
    admin.add_argument("--username", required=True)
    admin.add_argument("--email", required=True)
    admin.add_argument("--password", help="read from a prompt when left out")
    commands.add_parser(
        "purge",
        help="delete expired refresh tokens and idempotency keys, and old login failures",
    )
    args = parser.parse_args(argv)

    try:
        settings = get_settings()
    except ValidationError as error:
        sys.exit(describe_settings_error(error))
    configure_logging(settings)

    try:
        if args.command == "migrate":
            migrate(settings)
        elif args.command == "create-admin":
            create_admin(settings, args.username, args.email, args.password)
        else:
            families, failures, keys = asyncio.run(_purge(settings))
            logger.info(
                "purged %d refresh-token families, %d login failures and %d idempotency keys",
                families,
                failures,
                keys,
            )
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        sys.exit(f"invalid admin account: {problems}")


if __name__ == "__main__":
    main()
