from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from app.account.models import AccountToken, TokenPurpose
from app.users.models import User


class AccountTokenRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    def add(self, token: AccountToken) -> None:
        self._session.add(token)

    async def use(
        self, candidate_hashes: Sequence[str], purpose: TokenPurpose, now: datetime
    ) -> Row[int, str] | None:
        """Marks the token used and returns (user_id, address), if it was usable.

        One conditional update: of two transactions using one token at once,
        the second waits for the first's row lock (PostgreSQL) or write lock
        (SQLite), then finds it used, so exactly one of them wins.
        """
        statement = (
            update(AccountToken)
            .where(
                AccountToken.token_hash.in_(candidate_hashes),
                AccountToken.purpose == purpose,
                AccountToken.used_at.is_(None),
                AccountToken.expires_at > now,
            )
            .values(used_at=now)
            .returning(AccountToken.user_id, AccountToken.address)
            .execution_options(synchronize_session=False)
        )
        return (await self._session.execute(statement)).first()

    async def retire(self, user_id: int, *purposes: TokenPurpose) -> None:
        """Every token of the user for these purposes stops working."""
        await self._session.execute(
            delete(AccountToken).where(
                AccountToken.user_id == user_id, AccountToken.purpose.in_(purposes)
            )
        )

    async def retire_resets_of_address(self, address: str) -> None:
        """Every reset token of the active user with this address, if there is one.

        The user is looked up inside the statement, so an unknown address
        costs the same statement as a known one.
        """
        owner = select(User.id).where(func.lower(User.email) == address, User.is_active.is_(True))
        await self._session.execute(
            delete(AccountToken).where(
                AccountToken.purpose == TokenPurpose.PASSWORD_RESET,
                AccountToken.user_id.in_(owner.scalar_subquery()),
            )
        )

    async def retire_of_message(self, message_id: int) -> None:
        """The token an earlier attempt of this message carried (a retry gets a new one)."""
        await self._session.execute(
            delete(AccountToken).where(AccountToken.message_id == message_id)
        )

    async def delete_spent(self, now: datetime) -> int:
        result = await self._session.execute(
            delete(AccountToken).where(
                or_(AccountToken.expires_at <= now, AccountToken.used_at.is_not(None))
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)
