from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.models import Base, BigIntId, utc_now


class RefreshFamily(Base):
    """One login: every refresh token rotated out of it belongs to the same family.

    Revoking the family (logout, reuse of a retired token, password change)
    retires every token of that login at once.
    """

    __tablename__ = "refresh_families"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class RefreshToken(Base):
    __tablename__ = "refresh_tokens"

    jti: Mapped[str] = mapped_column(String(32), primary_key=True)
    family_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("refresh_families.id", ondelete="CASCADE"), index=True
    )
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    # Set when the token is exchanged for a new pair; a second use is theft.
    used_at: Mapped[datetime | None] = mapped_column(default=None)


class LoginFailure(Base):
    """One failed login, counted against a hashed throttle key."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_key_failed_at", "key", "failed_at"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    # sha256 of the key: submitted names are not stored in the clear.
    key: Mapped[str] = mapped_column(String(64))
    failed_at: Mapped[datetime] = mapped_column(default=utc_now)
