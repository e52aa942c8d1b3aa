"""The mail outbox (API.md 1.1, "Mail delivery"), in one process, against a real SMTP server.

Every message is a row written with the change that causes it; a
dispatcher claims due rows for a lease, sends outside any transaction and
records the result under its claim. Failed attempts are retried after
MAIL_RETRY_SECONDS, doubling up to an hour, up to MAIL_MAX_ATTEMPTS; then
the message is kept as failed until `python -m app mail retry`. What several
processes, a killed sender and a hanging SMTP server do is in
tests/server/test_mail.py.
"""

import asyncio
import logging
import re
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select, update

from app.account.models import AccountToken
from app.core.config import Settings
from app.core.database import Database
from app.core.models import utc_now
from app.mail.dispatcher import MailDispatcher, retry_delay
from app.mail.models import MessageStatus, OutboxMessage
from app.mail.repository import OutboxRepository
from tests.conftest import Runner, make_settings
from tests.mailbox import Inbox, free_port, smtp_settings
from tests.support import DatabaseProbe, client_for, register

FAST_RETRIES = {"mail_retry_seconds": 0.05, "smtp_timeout": 1.0}


async def outbox(db: DatabaseProbe) -> list[OutboxMessage]:
    return list(await db.all(select(OutboxMessage).order_by(OutboxMessage.id)))


def metric(text: str, name: str, kind: str) -> float:
    found = re.search(rf'^{name}\{{kind="{kind}"\}} (\S+)$', text, flags=re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_retries_wait_longer_each_time_up_to_an_hour() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    delays = [retry_delay(settings, attempt) for attempt in range(1, 11)]
    assert delays == [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600]


async def test_smtp_down_then_up_delivers_the_message_once(
    database_url: str, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens here yet
    settings = smtp_settings(database_url, tmp_path / "data", port, **FAST_RETRIES)
    async with client_for(settings) as (app, client):
        db = DatabaseProbe(app.state.database)
        assert (await register(client, "carol")).status_code == 201
        [pending] = await outbox(db)
        assert pending.status == MessageStatus.PENDING
        assert pending.attempts == 1
        assert pending.last_error
        assert pending.next_attempt_at > utc_now() - timedelta(seconds=1)

        inbox = Inbox()
        controller = Controller(inbox, hostname="127.0.0.1", port=port)
        controller.start()
        try:
            await asyncio.sleep(0.1)  # the retry falls due
            dispatcher: MailDispatcher = app.state.mail_dispatcher
            assert await dispatcher.dispatch_due() == 1
            assert await dispatcher.dispatch_due() == 0
            await asyncio.sleep(0.1)
            assert await dispatcher.dispatch_due() == 0
        finally:
            controller.stop()

        [sent] = await outbox(db)
    assert sent.status == MessageStatus.SENT
    assert sent.attempts == 2
    assert sent.sent_at is not None
    [received] = inbox.received_messages
    assert received.recipients == ["carol@example.com"]
    assert received.message["Message-ID"] == sent.message_id
    # The token of the failed attempt was replaced: one live token, the one received.
    tokens = await DatabaseProbe(app.state.database).all(select(AccountToken))
    assert len(tokens) == 1


async def test_a_message_is_given_up_after_the_last_attempt_then_retried_by_command(
    database_url: str,
    tmp_path: Path,
    run_app: Runner,
    inbox: tuple[Inbox, int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.mail")
    handler, port = inbox
    closed = free_port()
    settings = smtp_settings(
        database_url, tmp_path / "data", closed, mail_max_attempts=3, **FAST_RETRIES
    )
    async with client_for(settings) as (app, client):
        before = metric(
            (await client.get("/metrics")).text, "mail_messages_failed_total", "welcome"
        )
        await register(client, "carol")
        dispatcher: MailDispatcher = app.state.mail_dispatcher
        for _ in range(20):
            await asyncio.sleep(0.06)
            await dispatcher.dispatch_due()
        db = DatabaseProbe(app.state.database)
        [failed] = await outbox(db)
        after = metric((await client.get("/metrics")).text, "mail_messages_failed_total", "welcome")

    assert failed.status == MessageStatus.FAILED
    assert failed.attempts == 3
    assert failed.last_error
    assert after == before + 1
    errors = [r for r in caplog.records if r.name == "app.mail" and r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "gave up" in errors[0].getMessage()
    assert "carol@example.com" in errors[0].getMessage()

    command_url = database_url.replace("+aiosqlite", "").replace("+asyncpg", "")
    status = run_app("-m", "app", "mail", "status", DATABASE_URL=command_url)
    assert status.returncode == 0, status.stderr
    assert re.search(r"^failed\s+1$", status.stdout, flags=re.MULTILINE), status.stdout
    assert re.search(r"^pending\s+0$", status.stdout, flags=re.MULTILINE), status.stdout

    retried = run_app("-m", "app", "mail", "retry", DATABASE_URL=command_url)
    assert retried.returncode == 0, retried.stderr
    assert "requeued 1 failed message" in retried.stderr

    working = smtp_settings(database_url, tmp_path / "data2", port)
    async with client_for(working) as (app, _):
        assert await app.state.mail_dispatcher.dispatch_due() == 1
        [sent] = await outbox(DatabaseProbe(app.state.database))
    assert sent.status == MessageStatus.SENT
    assert sent.attempts == 1
    [received] = handler.received_messages
    assert received.message["Message-ID"] == failed.message_id


async def test_a_claim_whose_sender_died_expires_and_another_sends_it(
    database_url: str, tmp_path: Path, inbox: tuple[Inbox, int]
) -> None:
    handler, port = inbox
    settings = smtp_settings(database_url, tmp_path / "data", port, mail_dispatcher="worker")
    async with client_for(settings) as (app, client):
        await register(client, "carol")
        database: Database = app.state.database
        # A sender claims the message with a short lease, then dies (never records).
        async with database.sessionmaker() as session, session.begin():
            now = utc_now()
            [claimed] = await OutboxRepository(session).claim_due(
                now, limit=10, lease_until=now + timedelta(seconds=0.3)
            )
        other = MailDispatcher(database, settings)

        assert await other.dispatch_due() == 0  # still claimed
        await asyncio.sleep(0.35)
        assert await other.dispatch_due() == 1

        [sent] = await outbox(DatabaseProbe(database))
    assert sent.status == MessageStatus.SENT
    assert sent.attempts == 2  # the dead sender's attempt counts
    assert [m.message["Message-ID"] for m in handler.received_messages] == [claimed.message_id]


async def test_two_dispatchers_send_every_message_exactly_once(
    database_url: str, tmp_path: Path, inbox: tuple[Inbox, int]
) -> None:
    handler, port = inbox
    settings = smtp_settings(database_url, tmp_path / "data", port, mail_dispatcher="worker")
    async with client_for(settings) as (app, client):
        for n in range(30):
            assert (await register(client, f"user{n}")).status_code == 201
        assert handler.messages == []  # MAIL_DISPATCHER=worker: the API sends nothing
        first, second = Database(settings), Database(settings)
        try:
            sent = await asyncio.gather(
                MailDispatcher(first, settings).dispatch_due(),
                MailDispatcher(second, settings).dispatch_due(),
            )
        finally:
            await first.dispose()
            await second.dispose()
        rows = await outbox(DatabaseProbe(app.state.database))

    assert sum(sent) == 30
    assert {row.status for row in rows} == {MessageStatus.SENT}
    ids = [m.message["Message-ID"] for m in handler.received_messages]
    assert len(ids) == 30
    assert sorted(ids) == sorted(row.message_id for row in rows)
    recipients = sorted(r for m in handler.received_messages for r in m.recipients)
    assert recipients == sorted(f"user{n}@example.com" for n in range(30))


async def test_a_deleted_users_messages_go_with_them(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path / "data", mail_dispatcher="worker")
    async with client_for(settings) as (app, client):
        created = await register(client, "carol")
        tokens = (
            await client.post(
                "/api/v1/auth/token",
                data={"username": "carol", "password": "correct horse battery"},
            )
        ).json()
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        assert created.status_code == 201
        assert (await client.delete("/api/v1/users/me", headers=headers)).status_code == 204
        assert await outbox(DatabaseProbe(app.state.database)) == []


async def test_without_smtp_the_message_goes_to_the_log_with_its_link_only_in_development(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.mail")
    for environment in ("development", "test"):
        caplog.clear()
        settings = make_settings(database_url, tmp_path / environment, environment=environment)
        async with client_for(settings) as (app, client):
            await register(client, f"user_{environment}")
            [message] = [
                r.getMessage() for r in caplog.records if r.getMessage().startswith("message for")
            ]
            rows = await outbox(DatabaseProbe(app.state.database))
        assert rows[-1].status == MessageStatus.SENT
        assert f"Hello user_{environment}" in message
        has_link = "/account/verify-email?token=" in message
        assert has_link is (environment == "development"), message


async def test_purge_drops_old_sent_messages_and_spent_tokens_but_keeps_failed_ones(
    database_url: str, tmp_path: Path, run_app: Runner
) -> None:
    settings = make_settings(database_url, tmp_path / "data")
    async with client_for(settings) as (app, client):
        for name in ("old", "failed", "recent"):
            await register(client, name)
        database: Database = app.state.database
        long_ago = utc_now() - timedelta(days=8)
        async with database.sessionmaker() as session, session.begin():
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.address.in_(["old@example.com", "failed@example.com"]))
                .values(created_at=long_ago)
            )
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.address == "failed@example.com")
                .values(status=MessageStatus.FAILED)
            )
            await session.execute(
                update(AccountToken)
                .where(AccountToken.address == "old@example.com")
                .values(expires_at=long_ago)
            )

    command_url = database_url.replace("+aiosqlite", "").replace("+asyncpg", "")
    purged = run_app("-m", "app", "purge", DATABASE_URL=command_url)
    assert purged.returncode == 0, purged.stderr
    assert "1 spent one-time tokens" in purged.stderr
    assert "1 sent or skipped messages" in purged.stderr

    async with client_for(settings) as (app, _):
        db = DatabaseProbe(app.state.database)
        left = {m.address: m.status for m in await outbox(db)}
        tokens = {t.address for t in await db.all(select(AccountToken))}
    assert left == {
        "failed@example.com": MessageStatus.FAILED,
        "recent@example.com": MessageStatus.SENT,
    }
    assert tokens == {"failed@example.com", "recent@example.com"}


async def test_a_rejected_setting_names_itself(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="MAIL_LEASE_SECONDS"):
        Settings(_env_file=None, smtp_timeout=40, mail_lease_seconds=60)  # type: ignore[call-arg]
    for name, value in (
        ("password_reset_url", "https://shop.example/reset"),
        ("email_verification_url", "javascript:alert({token})"),
        ("public_url", "shop.example"),
    ):
        with pytest.raises(ValueError, match=name):
            Settings(_env_file=None, **{name: value})  # type: ignore[arg-type]


async def test_the_metrics_count_sent_messages(client: httpx.AsyncClient) -> None:
    before = metric((await client.get("/metrics")).text, "mail_messages_sent_total", "welcome")
    await register(client, "carol")
    after = metric((await client.get("/metrics")).text, "mail_messages_sent_total", "welcome")
    assert after == before + 1
