from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.models import Base, BigIntId, utc_now


class IdempotencyKey(Base):
    """A client's `Idempotency-Key` and the response its first request got.

    A retry with the key is answered from here instead of being run again,
    until `expires_at`.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        # Keys are the client's own choice, so they are unique per user only.
        # Leading with user_id, the index also serves the cascade from users.
        Index("uq_idempotency_keys_user_id_key", "user_id", "key", unique=True),
        Index("ix_idempotency_keys_expires_at", "expires_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("users.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    # sha256 (hex) of the canonical request: a retry must be the same request.
    fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int]
    # The response body exactly as it was sent, so a replay is byte for byte the same.
    body: Mapped[str] = mapped_column(Text)
    location: Mapped[str | None] = mapped_column(String(2048))
    etag: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    expires_at: Mapped[datetime]
