import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import utc_now
from app.mail.models import MessageKind, MessageStatus, OutboxMessage
from app.users.models import User

# The PostgreSQL channel a `python -m app worker` listens on to be woken at once.
NOTIFY_CHANNEL = "mail_outbox"
# Set in a session's `info` when it wrote a message, so that the request's
# dispatcher wake-up (app/mail/dispatcher.py) knows there is something to send.
ENQUEUED = "mail_enqueued"


class OutboxRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add_for_user(self, kind: MessageKind, user: User, *, domain: str) -> None:
        """A message to `user` at their current address."""
        await self._add(
            kind=kind, user_id=user.id, address=user.email.lower(), message_id=_message_id(domain)
        )

    async def add_password_reset(self, address: str, *, domain: str) -> None:
        """A reset request for `address`, whether or not an active user has it.

        One statement either way: the user and their token version are
        looked up inside it (null when nobody matches), so a request for an
        unknown address does exactly the work of one for a known address.
        """
        owner = select(User.id, User.token_version).where(
            func.lower(User.email) == address, User.is_active.is_(True)
        )
        await self._add(
            kind=MessageKind.PASSWORD_RESET,
            user_id=owner.with_only_columns(User.id).scalar_subquery(),
            token_version=owner.with_only_columns(User.token_version).scalar_subquery(),
            address=address,
            message_id=_message_id(domain),
        )

    async def _add(self, **values: Any) -> None:
        values.setdefault("token_version", None)
        now = values.setdefault("created_at", utc_now())
        statement = insert(OutboxMessage).values(
            status=MessageStatus.PENDING, attempts=0, next_attempt_at=now, **values
        )
        await self._session.execute(statement)
        self._session.info[ENQUEUED] = True
        if self._session.get_bind().dialect.name == "postgresql":
            # Delivered to listeners when (and only if) the transaction commits.
            await self._session.execute(select(func.pg_notify(NOTIFY_CHANNEL, "")))

    async def recent_times(
        self,
        kind: MessageKind,
        *,
        since: datetime,
        limit: int,
        address: str | None = None,
        user_id: int | None = None,
    ) -> Sequence[datetime]:
        """When messages of `kind` to an address (or a user) were asked for since `since`,
        newest first."""
        statement = select(OutboxMessage.created_at).where(
            OutboxMessage.kind == kind, OutboxMessage.created_at > since
        )
        if address is not None:
            statement = statement.where(OutboxMessage.address == address)
        if user_id is not None:
            statement = statement.where(OutboxMessage.user_id == user_id)
        statement = statement.order_by(OutboxMessage.created_at.desc()).limit(limit)
        return (await self._session.scalars(statement)).all()

    async def claim_due(
        self, now: datetime, *, limit: int, lease_until: datetime
    ) -> Sequence[OutboxMessage]:
        """Claims up to `limit` pending messages that are due, for this process alone.

        A claim counts an attempt and moves the message's next attempt to
        the end of the lease: if this process dies before recording a
        result, the message falls due again then, for any process. On
        PostgreSQL, SKIP LOCKED lets concurrent claims pass each other by
        instead of waiting or taking the same rows; SQLite has one writer at a
        time anyway (and renders no FOR UPDATE).
        """
        due = (
            select(OutboxMessage.id)
            .where(
                OutboxMessage.status == MessageStatus.PENDING,
                OutboxMessage.next_attempt_at <= now,
            )
            .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        statement = (
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(due.scalar_subquery()))
            .values(
                attempts=OutboxMessage.attempts + 1,
                next_attempt_at=lease_until,
                claim=uuid.uuid4().hex,
            )
            .returning(OutboxMessage)
            .execution_options(synchronize_session=False)
        )
        claimed = (await self._session.scalars(statement)).all()
        return sorted(claimed, key=lambda message: message.id)

    async def has_newer(self, message: OutboxMessage) -> bool:
        """Whether the same user asked for a message of the same kind after this one."""
        statement = select(OutboxMessage.id).where(
            OutboxMessage.kind == message.kind,
            OutboxMessage.user_id == message.user_id,
            OutboxMessage.id > message.id,
        )
        return (await self._session.scalar(statement.limit(1))) is not None

    async def finish(self, message: OutboxMessage, **values: Any) -> bool:
        """Records the result of an attempt, if the message is still this attempt's to record."""
        statement = (
            update(OutboxMessage)
            .where(
                OutboxMessage.id == message.id,
                OutboxMessage.claim == message.claim,
                OutboxMessage.status == MessageStatus.PENDING,
            )
            .values(claim=None, **values)
            .execution_options(synchronize_session=False)
        )
        result = await self._session.execute(statement)
        return bool(getattr(result, "rowcount", 0))

    async def count_by_status(self) -> dict[MessageStatus, int]:
        statement = select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
        counts = dict.fromkeys(MessageStatus, 0)
        for status, count in (await self._session.execute(statement)).tuples():
            counts[status] = count
        return counts

    async def requeue_failed(self, now: datetime) -> int:
        """Failed messages become pending again, with a fresh count of attempts."""
        result = await self._session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.status == MessageStatus.FAILED)
            .values(status=MessageStatus.PENDING, attempts=0, next_attempt_at=now, claim=None)
        )
        self._session.info[ENQUEUED] = True
        return int(getattr(result, "rowcount", 0) or 0)

    async def delete_finished_before(self, before: datetime) -> int:
        """Drops sent and skipped messages older than `before`; failed ones stay for operators."""
        result = await self._session.execute(
            delete(OutboxMessage).where(
                OutboxMessage.status.in_((MessageStatus.SENT, MessageStatus.SKIPPED)),
                OutboxMessage.created_at < before,
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)


def _message_id(domain: str) -> str:
    return f"<{uuid.uuid4().hex}@{domain}>"
