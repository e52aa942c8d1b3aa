from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.models import Base, BigIntId, string_enum, utc_now


class MessageKind(StrEnum):
    WELCOME = "welcome"  # after registration, with the verification link
    VERIFY_EMAIL = "verify_email"  # a new address, or asked for again
    PASSWORD_RESET = "password_reset"  # noqa: S105  (a kind of message, not a secret)


class MessageStatus(StrEnum):
    PENDING = "pending"  # to be sent, at next_attempt_at (or claimed until then)
    SENT = "sent"
    FAILED = "failed"  # MAIL_MAX_ATTEMPTS used up; `python -m app mail retry` requeues
    SKIPPED = "skipped"  # nothing to send any more: no such user, address changed, superseded


class OutboxMessage(Base):
    """A message to send, written in the transaction of the change that causes it.

    The row holds what the message is about, never its text: a message's
    one-time token is made when it is sent (see app/account/service.py), so
    the database only ever holds the token's hash. Delivery state lives here
    too, which is what lets any process send it and none lose it.
    """

    __tablename__ = "mail_outbox"
    __table_args__ = (
        # The dispatcher's claim: pending messages that are due, oldest first.
        Index("ix_mail_outbox_status_next_attempt_at", "status", "next_attempt_at"),
        # The per-address limits count recent messages of one kind to one address.
        Index("ix_mail_outbox_kind_address_created_at", "kind", "address", "created_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    kind: Mapped[MessageKind] = mapped_column(string_enum(MessageKind, "message_kind"))
    # Null for a reset asked for an address no active user has: the request
    # is recorded all the same (it counts against the address's limit) and
    # the dispatcher skips it.
    user_id: Mapped[int | None] = mapped_column(
        BigIntId, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    # The recipient, lower-cased; the mail goes to the user's address as stored.
    address: Mapped[str] = mapped_column(String(320))
    # For a reset, the user's token version when it was asked for: a password
    # change since then makes the request void.
    token_version: Mapped[int | None]
    # The Message-ID header, the same on every attempt, so a receiver can
    # recognise the rare second delivery.
    message_id: Mapped[str] = mapped_column(String(255), unique=True)
    status: Mapped[MessageStatus] = mapped_column(
        string_enum(MessageStatus, "message_status"), default=MessageStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utc_now)
    # Who holds the current attempt; a result is recorded only under it.
    claim: Mapped[str | None] = mapped_column(String(32))
    # The error's class name only: an SMTP server's words may echo anything.
    last_error: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    sent_at: Mapped[datetime | None]
