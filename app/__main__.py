"""Operations commands: `python -m app migrate | create-admin | purge | worker | mail`."""

import argparse
import asyncio
import getpass
import json
import logging
import signal
import sys
from datetime import timedelta

from pydantic import ValidationError

from app import __version__
from app.account.repository import AccountTokenRepository
from app.auth.repository import LoginFailureRepository, RefreshTokenRepository
from app.core.config import Settings, describe_settings_error, get_settings
from app.core.database import Database
from app.core.logging import configure_logging
from app.core.migrations import upgrade
from app.core.models import utc_now
from app.core.security import PasswordHasher
from app.core.tracing import Tracing, instrument_engine, tracing_requested
from app.events.repository import EventLog
from app.idempotency.repository import IdempotencyKeyRepository
from app.mail.dispatcher import MailDispatcher, listen_for_mail
from app.mail.models import MessageStatus
from app.mail.repository import OutboxRepository
from app.users.service import UserService

logger = logging.getLogger("app.cli")
# In DATA_DIR, touched by `python -m app worker` after every batch and sweep:
# its age tells a health check whether the worker still works.
WORKER_HEARTBEAT = "mail-worker.alive"


async def _create_admin(settings: Settings, username: str, email: str, password: str) -> bool:
    database = Database(settings)
    try:
        async with database.sessionmaker() as session, session.begin():
            service = UserService(session, PasswordHasher(settings), settings)
            return await service.ensure_admin(username, email, password)
    finally:
        await database.dispose()


async def _purge(settings: Settings) -> dict[str, int]:
    database = Database(settings)
    now = utc_now()
    try:
        async with database.sessionmaker() as session, session.begin():
            return {
                "refresh-token families": await RefreshTokenRepository(session).delete_expired(now),
                "login failures": await LoginFailureRepository(session).delete_before(
                    now - timedelta(seconds=settings.login_window_seconds)
                ),
                "idempotency keys": await IdempotencyKeyRepository(session).delete_expired(now),
                "spent one-time tokens": await AccountTokenRepository(session).delete_spent(now),
                "sent or skipped messages": await OutboxRepository(session).delete_finished_before(
                    now - timedelta(days=settings.mail_retention_days)
                ),
                "product events": await EventLog(session).purge(
                    now - timedelta(seconds=settings.events_retention_seconds)
                ),
            }
    finally:
        await database.dispose()


async def _mail_status(settings: Settings) -> dict[MessageStatus, int]:
    database = Database(settings)
    try:
        async with database.sessionmaker() as session:
            return await OutboxRepository(session).count_by_status()
    finally:
        await database.dispose()


async def _mail_retry(settings: Settings) -> int:
    database = Database(settings)
    try:
        async with database.sessionmaker() as session, session.begin():
            return await OutboxRepository(session).requeue_failed(utc_now())
    finally:
        await database.dispose()


async def _work(settings: Settings) -> None:
    """The mail dispatcher as a process of its own, until SIGTERM or SIGINT.

    On PostgreSQL it listens for new messages (LISTEN/NOTIFY) and so sends at
    once; on SQLite it looks every MAIL_POLL_SECONDS. Either way it also
    sweeps on that timer, for retries and anything a notification missed.
    """
    database = Database(settings)
    tracing = None
    if tracing_requested():
        instrument_engine(database.engine)
        tracing = Tracing.start(__version__)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    heartbeat = settings.data_dir / WORKER_HEARTBEAT
    dispatcher = MailDispatcher(database, settings, heartbeat=heartbeat)
    stop, wake = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)
    listener = None
    if settings.listen_dsn is not None:
        listener = asyncio.create_task(listen_for_mail(settings.listen_dsn, wake, stop))
    logger.info(
        "mail worker started (%s)",
        "LISTEN/NOTIFY and a sweep" if listener else "polling",
        extra={"poll_seconds": settings.mail_poll_seconds},
    )
    try:
        await dispatcher.run(stop, wake)
    finally:
        if listener is not None:
            await listener
        await database.dispose()
        if tracing is not None:
            await asyncio.to_thread(tracing.shutdown)
    logger.info("mail worker stopped")


def openapi_json(settings: Settings) -> str:
    """The document exactly as /openapi.json serves it, indented for review."""
    from app.main import create_app

    app = create_app(settings.model_copy(update={"docs_enabled": True}))
    try:
        return json.dumps(app.openapi(), indent=2, ensure_ascii=False) + "\n"
    finally:
        asyncio.run(app.state.database.dispose())


def migrate(settings: Settings) -> None:
    """Applies every migration, then creates the first admin from FIRST_ADMIN_* if missing."""
    upgrade(settings.sqlalchemy_url, first_admin_email=settings.first_admin_email)
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
        help="delete expired refresh tokens, idempotency keys and one-time tokens, old login "
        "failures, and sent messages older than MAIL_RETENTION_DAYS",
    )
    commands.add_parser("worker", help="send mail from the outbox until stopped (SIGTERM)")
    commands.add_parser(
        "openapi", help="print the OpenAPI document the service serves (docs/openapi.json)"
    )
    mail = commands.add_parser("mail", help="the mail outbox")
    mail_commands = mail.add_subparsers(dest="mail_command", required=True)
    mail_commands.add_parser("status", help="print how many messages are in each state")
    mail_commands.add_parser("retry", help="requeue the failed messages")
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
        elif args.command == "worker":
            asyncio.run(_work(settings))
        elif args.command == "openapi":
            sys.stdout.write(openapi_json(settings))
        elif args.command == "mail" and args.mail_command == "status":
            counts = asyncio.run(_mail_status(settings))
            for status, count in counts.items():
                print(f"{status.value:<8} {count}")
        elif args.command == "mail":
            requeued = asyncio.run(_mail_retry(settings))
            logger.info("requeued %d failed messages", requeued)
        else:
            purged = asyncio.run(_purge(settings))
            logger.info("purged " + ", ".join(f"{count} {what}" for what, count in purged.items()))
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        sys.exit(f"invalid admin account: {problems}")


if __name__ == "__main__":
    main()
