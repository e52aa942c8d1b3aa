"""Sends what the outbox holds: after each request that wrote a message, on a timer, or in
a process of its own (`python -m app worker`).

Any number of dispatchers, in any number of processes and replicas, may run
on one database: each message is claimed by one of them for a lease (see
OutboxRepository.claim_due), sent outside any transaction, and its result
recorded under that claim. A dispatcher that dies leaves its claims to
expire; another then sends them. What can happen twice is rare and
harmless to lose nothing: a crash after the SMTP server took a message and
before the result was recorded sends it again, with the same Message-ID.
"""

import asyncio
import logging
from datetime import timedelta
from pathlib import Path
from typing import Annotated

from fastapi import BackgroundTasks, Depends, Request
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation

from app.account.service import AccountLetters
from app.core import metrics
from app.core.config import Settings
from app.core.database import Database, SessionDep
from app.core.models import utc_now
from app.core.notifications import first_of, listen
from app.mail.models import MessageStatus, OutboxMessage
from app.mail.repository import ENQUEUED, NOTIFY_CHANNEL, OutboxRepository
from app.mail.transport import MailTransport

logger = logging.getLogger("app.mail")
_tracer = trace.get_tracer("app.mail")

# Messages claimed at once, and sent concurrently.
CLAIM_BATCH = 10
# The longest wait between retries, whatever MAIL_RETRY_SECONDS doubles to.
MAX_RETRY_DELAY_SECONDS = 3600.0
# How long a stopping dispatcher lets the sends in progress finish.
STOP_GRACE_SECONDS = 5.0


def retry_delay(settings: Settings, attempts: int) -> float:
    """MAIL_RETRY_SECONDS after the first failed attempt, doubling each time, up to an hour."""
    delay: float = settings.mail_retry_seconds * 2 ** (attempts - 1)
    return min(delay, MAX_RETRY_DELAY_SECONDS)


class MailDispatcher:
    def __init__(
        self, database: Database, settings: Settings, *, heartbeat: Path | None = None
    ) -> None:
        self._database = database
        self._settings = settings
        # Touched after every batch and every sweep, so a health check can
        # tell a working dispatcher from a stuck one (compose's worker).
        self._heartbeat = heartbeat
        self._transport = MailTransport(settings)
        self._running = False
        self._again = False
        self._stop = asyncio.Event()  # set by run()'s caller: finish the batch, then return

    async def dispatch_due(self) -> int:
        """Sends every message that is due; returns how many were handled.

        One pass at a time per process: a call while a pass runs asks that
        pass to look once more and returns at once, so a burst of requests
        costs one pass, not one each. Never raises: the database being away
        only postpones the messages to the next pass.
        """
        if self._running:
            self._again = True
            return 0
        self._running = True
        handled = 0
        try:
            while not self._stop.is_set():
                self._again = False
                # Untraced: a sweep that finds nothing, every MAIL_POLL_SECONDS
                # in every process, would bury the traces that matter.
                with suppress_instrumentation():
                    batch = await self._claim()
                self._beat()
                if batch:
                    await asyncio.gather(*(self._deliver(message) for message in batch))
                    handled += len(batch)
                elif not self._again:
                    break
            return handled
        except Exception as error:  # a pass must not take its caller down
            logger.warning("mail dispatch stopped early: %s", type(error).__name__)
            return handled
        finally:
            self._running = False

    async def run(self, stop: asyncio.Event, wake: asyncio.Event | None = None) -> None:
        """Passes until `stop` is set: every MAIL_POLL_SECONDS, and whenever `wake` is set.

        The timer is what makes delivery certain: a wake-up can be lost
        (a worker restarting, a notification while disconnected), a due
        message cannot.
        """
        wake = wake or asyncio.Event()
        self._stop = stop
        if not self._transport.uses_smtp and self._settings.environment != "development":
            logger.warning(
                "SMTP_HOST is not set: messages go to the log, without their links; "
                "nobody receives them"
            )
        while not stop.is_set():
            wake.clear()
            await self.dispatch_due()
            self._beat()
            await first_of(stop, wake, seconds=self._settings.mail_poll_seconds)

    def _beat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.touch()

    async def _claim(self) -> list[OutboxMessage]:
        now = utc_now()
        lease_until = now + timedelta(seconds=self._settings.mail_lease_seconds)
        async with self._database.sessionmaker() as session, session.begin():
            claimed = await OutboxRepository(session).claim_due(
                now, limit=CLAIM_BATCH, lease_until=lease_until
            )
            return list(claimed)

    async def _deliver(self, message: OutboxMessage) -> None:
        # With tracing on, one span per message holds its SQL and its SMTP
        # exchange; after a request, within that request's trace.
        attributes = {"mail.outbox_id": message.id, "mail.kind": message.kind.value}
        with _tracer.start_as_current_span("mail deliver", attributes=attributes):
            await self._prepare_and_send(message)

    async def _prepare_and_send(self, message: OutboxMessage) -> None:
        try:
            async with self._database.sessionmaker() as session, session.begin():
                letter = await AccountLetters(session, self._settings).prepare(message)
                if letter is None:
                    await OutboxRepository(session).finish(message, status=MessageStatus.SKIPPED)
        except Exception as error:  # the claim expires and the message is tried again
            logger.warning("could not prepare message %d: %s", message.id, type(error).__name__)
            return
        if letter is None:
            metrics.MAIL_SKIPPED.labels(message.kind.value).inc()
            logger.info(
                "nothing to send for message %d (%s): no active user has the address now, "
                "or a newer request or a password change superseded it",
                message.id,
                message.kind,
            )
            return
        try:
            await self._transport.send(letter)
        except Exception as error:  # SMTP's failure is the message's, never the caller's
            await self._record_failure(message, letter.to, error)
            return
        await self._record(message, status=MessageStatus.SENT, sent_at=utc_now())
        metrics.MAIL_SENT.labels(message.kind.value).inc()
        if self._transport.uses_smtp:
            logger.info("sent message %d (%s) to %s", message.id, message.kind, letter.to)

    async def _record_failure(self, message: OutboxMessage, to: str, error: Exception) -> None:
        # The class name only: an SMTP server's reply may echo anything back.
        reason = type(error).__name__
        metrics.MAIL_SEND_ERRORS.labels(message.kind.value).inc()
        if message.attempts >= self._settings.mail_max_attempts:
            await self._record(message, status=MessageStatus.FAILED, last_error=reason)
            metrics.MAIL_FAILED.labels(message.kind.value).inc()
            logger.error(
                "gave up on message %d (%s) to %s after %d attempts: %s; "
                "`python -m app mail retry` tries the failed messages again",
                message.id,
                message.kind,
                to,
                message.attempts,
                reason,
            )
            return
        delay = retry_delay(self._settings, message.attempts)
        await self._record(
            message, next_attempt_at=utc_now() + timedelta(seconds=delay), last_error=reason
        )
        logger.warning(
            "could not send message %d (%s) to %s: %s; attempt %d of %d, next in %.0f s",
            message.id,
            message.kind,
            to,
            reason,
            message.attempts,
            self._settings.mail_max_attempts,
            delay,
        )

    async def _record(self, message: OutboxMessage, **values: object) -> None:
        try:
            async with self._database.sessionmaker() as session, session.begin():
                recorded = await OutboxRepository(session).finish(message, **values)
        except Exception as error:  # the claim expires and the message is tried again
            logger.warning(
                "could not record the result of message %d: %s", message.id, type(error).__name__
            )
            return
        if not recorded:
            logger.warning("message %d was claimed again before its result came", message.id)


async def listen_for_mail(dsn: str, wake: asyncio.Event, stop: asyncio.Event) -> None:
    """Sets `wake` on each new message (LISTEN); a missed one is found by the sweep."""
    await listen(dsn, NOTIFY_CHANNEL, wake, stop)


async def get_dispatcher(request: Request) -> MailDispatcher | None:
    """This process's dispatcher; None when MAIL_DISPATCHER=worker (a worker sends)."""
    dispatcher: MailDispatcher | None = request.app.state.mail_dispatcher
    return dispatcher


async def dispatch_after_response(
    background: BackgroundTasks,
    session: SessionDep,
    dispatcher: Annotated[MailDispatcher | None, Depends(get_dispatcher)],
) -> None:
    """For routes that may write a message: send it right after the response.

    The task runs after the response, so after the request's commit: a
    message written by a request that rolled back is not there to send.
    """
    if dispatcher is None:
        return

    async def send_if_written() -> None:
        if session.info.get(ENQUEUED):
            await dispatcher.dispatch_due()

    background.add_task(send_if_written)
