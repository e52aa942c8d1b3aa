from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Boolean, Index, String, false, func, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.models import Base, BigIntId, TimestampMixin, string_enum


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"


class User(TimestampMixin, Base):
    __tablename__ = "users"
    __table_args__ = (
        # Uniqueness without regard to case lives in the database, so that
        # concurrent registrations of "Alice" and "alice" cannot both win.
        Index("uq_users_username_lower", func.lower(text("username")), unique=True),
        Index("uq_users_email_lower", func.lower(text("email")), unique=True),
        # Ids are never reused (PostgreSQL sequences never do): a deleted
        # user's token must not name whoever registers next.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    username: Mapped[str] = mapped_column(String(50))
    email: Mapped[str] = mapped_column(String(320))
    full_name: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(string_enum(Role, "role"), default=Role.USER)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # True once the owner of the address followed a verification link sent
    # to it; a change of address makes it false again.
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Raised on every password change; tokens carry the version they were
    # issued under, so older ones stop working at once (even within a second).
    token_version: Mapped[int] = mapped_column(default=1)

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a request, for the rules that only ask who (owner or admin):
    the signed-in user's id and role, read in one Core statement, no ORM object."""

    id: int
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN
