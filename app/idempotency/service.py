"""Idempotent requests: a retry with the same `Idempotency-Key` gets the first answer again.

The whole exchange runs in the request's one transaction: the lock on the
key, the look-up, the work itself and the stored response. The work and its
stored response therefore commit together or not at all, so a request that
fails stores nothing and its retry simply runs again.
"""

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.database import DuplicateValue
from app.core.exceptions import Conflict, IdempotencyKeyReused
from app.core.models import utc_now
from app.idempotency.models import IdempotencyKey
from app.idempotency.repository import IdempotencyKeyRepository

KEY_LIFETIME = timedelta(hours=24)


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    body: str
    location: str | None = None
    etag: str | None = None


@dataclass(frozen=True)
class Outcome:
    response: StoredResponse
    replayed: bool


def fingerprint(operation: str, payload: BaseModel) -> str:
    """sha256 (hex) of the request as validated, not as sent.

    `"12.50"` and `12.5`, a field left out and the same field sent with its
    default, or the same members in another order are one request; the
    operation's name keeps one key from naming two kinds of request.
    """
    canonical = json.dumps(
        {"operation": operation, "body": payload.model_dump(mode="json")},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotencyService:
    def __init__(self, session: AsyncSession) -> None:
        self._keys = IdempotencyKeyRepository(session)

    async def run(
        self,
        user_id: int,
        key: str,
        request_fingerprint: str,
        action: Callable[[], Awaitable[StoredResponse]],
    ) -> Outcome:
        """Runs `action` once per user and key; later, the same request gets its response back.

        While a request with the key runs, another gets 409 at once instead
        of waiting (PostgreSQL; on SQLite it waits, then gets the stored
        response). A key that came with a different request gets 422; one
        older than KEY_LIFETIME is forgotten and the request runs anew.
        """
        if not await self._keys.try_lock(user_id, key):
            raise _in_progress()
        now = utc_now()
        stored = await self._keys.get(user_id, key)
        if stored is not None:
            if stored.expires_at > now:
                if stored.fingerprint != request_fingerprint:
                    raise IdempotencyKeyReused(
                        "This Idempotency-Key was already used with a different request."
                    )
                return Outcome(_response_of(stored), replayed=True)
            await self._keys.delete(stored)

        response = await action()
        record = IdempotencyKey(
            user_id=user_id,
            key=key,
            fingerprint=request_fingerprint,
            status_code=response.status_code,
            body=response.body,
            location=response.location,
            etag=response.etag,
            created_at=now,
            expires_at=now + KEY_LIFETIME,
        )
        try:
            await self._keys.add(record)
        except DuplicateValue as duplicate:
            # The lock makes this unreachable; the unique index is the backstop.
            raise _in_progress() from duplicate
        return Outcome(response, replayed=False)


def _in_progress() -> Conflict:
    return Conflict("A request with this Idempotency-Key is still being processed; retry later.")


def _response_of(stored: IdempotencyKey) -> StoredResponse:
    return StoredResponse(
        status_code=stored.status_code,
        body=stored.body,
        location=stored.location,
        etag=stored.etag,
    )
