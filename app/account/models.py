from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.models import Base, BigIntId, string_enum, utc_now


class TokenPurpose(StrEnum):
    VERIFY_EMAIL = "verify_email"
    PASSWORD_RESET = "password_reset"  # noqa: S105  (a purpose, not a secret)


class AccountToken(Base):
    """A one-time token of an account flow, stored as a keyed hash only.

    Used once: the row is marked used by a conditional update, so of two
    requests racing with one token exactly one wins. Retired tokens (a newer
    reset, a password or address change) are deleted.
    """

    __tablename__ = "account_tokens"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    purpose: Mapped[TokenPurpose] = mapped_column(string_enum(TokenPurpose, "token_purpose"))
    # HMAC-SHA256 of the token (hex) under the signing key; see OneTimeTokens.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The address the token was sent to (lower-cased): a verification token
    # proves that address and no other.
    address: Mapped[str] = mapped_column(String(320))
    # The outbox message that carried it: a retried message replaces its token.
    message_id: Mapped[int | None] = mapped_column(BigIntId)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
