"""Password guessing, throttled per account in the database (shared by every worker)."""

import math
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.repository import LoginFailureRepository
from app.core.config import Settings
from app.core.exceptions import RateLimited
from app.core.models import utc_now
from app.users.models import User


def throttle_key(user: User | None, submitted_name: str) -> str:
    """One count per account (its username and email share it); for a name
    nobody has, one count per name as typed, ignoring case."""
    return f"user:{user.id}" if user is not None else f"name:{submitted_name.casefold()}"


class LoginThrottle:
    """Counts wrong passwords per key; at LOGIN_MAX_FAILURES within the window, refuses.

    Logins and password changes both go through it, so a stolen access
    token cannot guess the account's password faster on /users/me/password
    than anyone can on the token endpoint.
    """

    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self._failures = LoginFailureRepository(session)
        self._max_failures = settings.login_max_failures
        self._window = timedelta(seconds=settings.login_window_seconds)

    async def check(self, key: str) -> None:
        """Locks the key for the rest of the transaction; RateLimited if it is throttled."""
        await self._failures.lock(key)
        now = utc_now()
        recent = await self._failures.list_recent(
            key, since=now - self._window, limit=self._max_failures
        )
        if len(recent) >= self._max_failures:
            # Allowed again once the oldest of the last N failures leaves the window.
            wait = (recent[self._max_failures - 1] + self._window - now).total_seconds()
            raise RateLimited(
                "Too many failed password attempts for this account; try again later.",
                retry_after=max(1, math.ceil(wait)),
            )

    async def record_failure(self, key: str) -> None:
        now = utc_now()
        await self._failures.add(key, now, forget_before=now - self._window)

    async def reset(self, key: str) -> None:
        await self._failures.clear(key)
