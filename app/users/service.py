import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.account.models import TokenPurpose
from app.account.repository import AccountTokenRepository
from app.auth.repository import RefreshTokenRepository
from app.auth.throttle import LoginThrottle, throttle_key
from app.core.config import Settings
from app.core.database import DuplicateValue
from app.core.exceptions import Conflict, NotFound, PermissionDenied, WrongPassword
from app.core.models import utc_now
from app.core.security import PasswordHasher
from app.events.repository import EventLog
from app.mail.models import MessageKind
from app.mail.repository import OutboxRepository
from app.products.repository import ProductRepository
from app.users.models import Actor, Role, User
from app.users.repository import UserRepository
from app.users.schemas import UserAdminUpdate, UserCreate, UserUpdate

logger = logging.getLogger(__name__)


class UserService:
    def __init__(self, session: AsyncSession, hasher: PasswordHasher, settings: Settings) -> None:
        self._session = session
        self._users = UserRepository(session)
        self._refresh_tokens = RefreshTokenRepository(session)
        self._account_tokens = AccountTokenRepository(session)
        self._outbox = OutboxRepository(session)
        self._throttle = LoginThrottle(session, settings)
        self._hasher = hasher
        self._mail_domain = settings.message_id_domain

    async def register(
        self, data: UserCreate, *, role: Role = Role.USER, verified: bool = False
    ) -> User:
        """A new account; unless its address is known to be good, a welcome message
        with a verification link goes out after the commit (the outbox)."""
        user = User(
            username=data.username,
            email=data.email,
            full_name=data.full_name,
            password_hash=await self._hasher.hash(data.password),
            role=role,
            email_verified=verified,
        )
        try:
            await self._users.add(user)
        except DuplicateValue as duplicate:
            raise _taken(duplicate) from duplicate
        if not verified:
            await self._outbox.add_for_user(MessageKind.WELCOME, user, domain=self._mail_domain)
        return user

    async def get(self, actor: Actor, user_id: int) -> User:
        """Any user, for an admin.

        Checked in the contract's order: existence (404), then permission
        (403). The admin check is here, not in a route dependency, because a
        dependency would answer 403 before the request had been validated.
        """
        user = await self._users.get(user_id)
        if user is None:
            raise NotFound(f"User {user_id} does not exist.")
        _require_admin(actor)
        return user

    async def list(self, actor: Actor, *, limit: int, offset: int) -> tuple[Sequence[User], int]:
        _require_admin(actor)
        return await self._users.list(limit=limit, offset=offset)

    async def update(self, user: User, data: UserUpdate) -> User:
        """Applies the changes sent.

        A new address (not merely a change of case) is unverified: every
        one-time token sent to the old one stops working, and a verification
        message goes to the new one.
        """
        changes: dict[str, Any] = data.model_dump(exclude_unset=True)
        if changes.get("is_active") is False and user.is_active:
            await self._end_sessions(user)
        new_address = "email" in changes and changes["email"].lower() != user.email.lower()
        if new_address:
            changes["email_verified"] = False
            await self._account_tokens.retire(user.id, *TokenPurpose)
        try:
            await self._users.update(user, changes)
        except DuplicateValue as duplicate:
            raise _taken(duplicate) from duplicate
        if new_address:
            await self._outbox.add_for_user(
                MessageKind.VERIFY_EMAIL, user, domain=self._mail_domain
            )
        return user

    async def update_by_id(self, actor: Actor, user_id: int, data: UserAdminUpdate) -> User:
        return await self.update(await self.get(actor, user_id), data)

    async def change_password(self, user: User, current: str, new: str) -> None:
        """Every token issued before the change stops working, access and refresh alike.

        Wrong current passwords count against the account's login throttle:
        a stolen access token must not turn this route into a way of
        guessing the password without limit.
        """
        key = throttle_key(user, user.username)
        await self._throttle.check(key)
        verified, _ = await self._hasher.verify(current, user.password_hash)
        if not verified:
            await self._throttle.record_failure(key)
            raise WrongPassword("The current password is not correct.")
        await self._throttle.reset(key)
        await self.set_password(user, await self._hasher.hash(new))

    async def set_password(self, user: User, password_hash: str) -> None:
        """Every token issued before stops working: access and refresh tokens, and
        password reset links not yet used."""
        user.password_hash = password_hash
        await self._end_sessions(user)
        await self._account_tokens.retire(user.id, TokenPurpose.PASSWORD_RESET)
        await self._users.update(user, {})

    async def delete(self, user: User) -> None:
        """Deletes the account; its products and logins go with it (ON DELETE CASCADE).

        Each product is a product.deleted event. The user's row is locked
        first: a product being created for them meanwhile (its foreign key
        check waits on that lock) is either seen here or refused.
        """
        await self._users.lock(user.id)
        owned = await ProductRepository(self._session).lock_owned_by(user.id)
        EventLog(self._session).products_deleted(owned)
        await self._users.delete(user)

    async def delete_by_id(self, actor: Actor, user_id: int) -> None:
        await self.delete(await self.get(actor, user_id))

    async def ensure_admin(self, username: str, email: str, password: str) -> bool:
        """Creates the first admin unless a user with that name or email exists; True if created."""
        for name in (username, email):
            if await self._users.get_by_login(name) is not None:
                return False
        data = UserCreate(username=username, email=email, password=password)
        try:
            # An operator set this address: it needs no verification message.
            await self.register(data, role=Role.ADMIN, verified=True)
        except Conflict:  # created meanwhile by a concurrent start-up
            return False
        return True

    async def _end_sessions(self, user: User) -> None:
        # Access tokens carry the version they were issued under; raising it
        # refuses them all at once, even ones issued this very second.
        user.token_version += 1
        await self._refresh_tokens.revoke_families_of(user.id, utc_now())


def _require_admin(actor: Actor) -> None:
    if not actor.is_admin:
        raise PermissionDenied("Only an admin may do this.")


def _taken(duplicate: DuplicateValue) -> Conflict:
    return Conflict(f"That {duplicate.key} is already taken.")
