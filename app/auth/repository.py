import hashlib
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import LoginFailure, RefreshFamily, RefreshToken
from app.core.database import lock_name


class RefreshTokenRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, jti: str) -> RefreshToken | None:
        return await self._session.get(RefreshToken, jti)

    async def get_family_for_update(self, family_id: str) -> RefreshFamily | None:
        """The family, locked until the transaction ends.

        Rotation, reuse detection and revocation of one login all take this
        lock first, so they happen one at a time: two requests presenting the
        same refresh token cannot both get a new pair.
        """
        statement = (
            select(RefreshFamily)
            .where(RefreshFamily.id == family_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return (await self._session.scalars(statement)).first()

    def add_family(self, family: RefreshFamily) -> None:
        self._session.add(family)

    def add(self, token: RefreshToken) -> None:
        self._session.add(token)

    async def revoke_families_of(self, user_id: int, at: datetime) -> None:
        await self._session.execute(
            update(RefreshFamily)
            .where(RefreshFamily.user_id == user_id, RefreshFamily.revoked_at.is_(None))
            .values(revoked_at=at)
        )

    async def delete_expired(self, before: datetime) -> int:
        """Drops families whose every token expired before `before` (their tokens go with them)."""
        live = select(RefreshToken.family_id).where(RefreshToken.expires_at >= before)
        result = await self._session.execute(
            delete(RefreshFamily).where(RefreshFamily.id.not_in(live))
        )
        return int(getattr(result, "rowcount", 0) or 0)


class LoginFailureRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def lock(self, key: str) -> None:
        """Serialises the logins of one throttle key until the transaction ends.

        Without it, concurrent wrong attempts could all read "4 failures" and
        all get to try.
        """
        await lock_name(self._session, key)

    async def list_recent(self, key: str, *, since: datetime, limit: int) -> Sequence[datetime]:
        """Failure times of `key` after `since`, newest first."""
        statement = (
            select(LoginFailure.failed_at)
            .where(LoginFailure.key == _digest(key), LoginFailure.failed_at > since)
            .order_by(LoginFailure.failed_at.desc())
            .limit(limit)
        )
        return (await self._session.scalars(statement)).all()

    async def add(self, key: str, at: datetime, *, forget_before: datetime) -> None:
        # Failures that left the window no longer count; drop them as we go.
        digest = _digest(key)
        await self._session.execute(
            delete(LoginFailure).where(
                LoginFailure.key == digest, LoginFailure.failed_at <= forget_before
            )
        )
        self._session.add(LoginFailure(key=digest, failed_at=at))
        await self._session.flush()

    async def clear(self, key: str) -> None:
        await self._session.execute(delete(LoginFailure).where(LoginFailure.key == _digest(key)))

    async def delete_before(self, before: datetime) -> int:
        result = await self._session.execute(
            delete(LoginFailure).where(LoginFailure.failed_at <= before)
        )
        return int(getattr(result, "rowcount", 0) or 0)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
