from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.core.database import flush_unique
from app.users.models import User

_UNIQUE_KEYS = {"username": ("uq_users_username_lower",), "email": ("uq_users_email_lower",)}


# A signed-in request's user: what its access token is checked against, and
# what /users/me shows. Never the password hash.
_SIGNED_IN = select(*(c for c in User.__table__.c if c.key != "password_hash")).where(
    User.id == bindparam("user_id")
)


# What a change needs to know of who asks it: the checks of the token and the role.
_ACTOR = select(User.id, User.role, User.is_active, User.token_version).where(
    User.id == bindparam("user_id")
)


# A row of _SIGNED_IN or _ACTOR (with attribute access: row.id, row.token_version).
SignedInRow = Row[*tuple[Any, ...]]


class UserReader:
    """The user behind an access token, in SQLAlchemy Core: one statement, no
    ORM object, on a connection outside any transaction (Database.read) or on
    the request's own transaction (a change)."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def signed_in(self, user_id: int) -> SignedInRow | None:
        return (await self._connection.execute(_SIGNED_IN, {"user_id": user_id})).first()

    async def actor(self, user_id: int) -> SignedInRow | None:
        return (await self._connection.execute(_ACTOR, {"user_id": user_id})).first()


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, user_id: int) -> User | None:
        return await self._session.get(User, user_id)

    async def get_for_update(self, user_id: int) -> User | None:
        """The user, locked until the transaction ends (fresh from the database)."""
        statement = (
            select(User)
            .where(User.id == user_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return (await self._session.scalars(statement)).first()

    async def get_by_login(self, name: str) -> User | None:
        """The user whose username or email is `name`, ignoring case.

        Usernames cannot contain "@" and emails always do, so at most one
        user matches. The database folds both sides, as its unique indexes
        do: SQLite's lower() leaves non-ASCII letters alone, and folding the
        name in Python would then miss an email like "Ünï@example.com".
        """
        folded = func.lower(name)
        statement = select(User).where(
            or_(func.lower(User.username) == folded, func.lower(User.email) == folded)
        )
        return (await self._session.scalars(statement)).first()

    async def list(self, *, limit: int, offset: int) -> tuple[Sequence[User], int]:
        page = await self._session.scalars(
            select(User).order_by(User.id).limit(limit).offset(offset)
        )
        total = await self._session.scalar(select(func.count()).select_from(User))
        return page.all(), total or 0

    async def add(self, user: User) -> User:
        self._session.add(user)
        await flush_unique(self._session, _UNIQUE_KEYS)
        return user

    async def update(self, user: User, changes: dict[str, Any]) -> User:
        for field, value in changes.items():
            setattr(user, field, value)
        await flush_unique(self._session, _UNIQUE_KEYS)
        return user

    async def lock(self, user_id: int) -> None:
        """Locks the user's row until the transaction ends."""
        await self._session.execute(select(User.id).where(User.id == user_id).with_for_update())

    async def delete(self, user: User) -> None:
        await self._session.delete(user)
        await self._session.flush()
