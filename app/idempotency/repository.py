from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.database import advisory_lock_id, flush_unique
from app.idempotency.models import IdempotencyKey

_UNIQUE_KEYS = {"key": ("uq_idempotency_keys_user_id_key", "idempotency_keys.key")}


class IdempotencyKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def try_lock(self, user_id: int, key: str) -> bool:
        """Takes the lock of one user's key until the transaction ends, without waiting.

        False means another transaction holds it: a request with this key is
        running right now. PostgreSQL takes a transaction-scoped advisory
        lock. SQLite needs none: its transactions take the database's write
        lock when they begin, so a second request with the key waits for the
        first to finish and then finds its stored response.
        """
        bind = self._session.get_bind()
        if bind.dialect.name != "postgresql":
            return True
        statement = select(func.pg_try_advisory_xact_lock(lock_id(user_id, key)))
        return bool(await self._session.scalar(statement))

    async def get(self, user_id: int, key: str) -> IdempotencyKey | None:
        statement = select(IdempotencyKey).where(
            IdempotencyKey.user_id == user_id, IdempotencyKey.key == key
        )
        return (await self._session.scalars(statement)).first()

    async def add(self, record: IdempotencyKey) -> IdempotencyKey:
        self._session.add(record)
        await flush_unique(self._session, _UNIQUE_KEYS)
        return record

    async def delete(self, record: IdempotencyKey) -> None:
        await self._session.delete(record)
        await self._session.flush()

    async def delete_expired(self, now: datetime) -> int:
        result = await self._session.execute(
            delete(IdempotencyKey).where(IdempotencyKey.expires_at <= now)
        )
        return int(getattr(result, "rowcount", 0) or 0)


def lock_id(user_id: int, key: str) -> int:
    """The advisory lock's number: the first 8 bytes of sha256("idem:{user_id}:{key}"), signed."""
    return advisory_lock_id(f"idem:{user_id}:{key}")
