"""Email verification and password reset: the one-time tokens and the messages that carry them."""

import math
from datetime import timedelta
from urllib.parse import quote

from sqlalchemy.ext.asyncio import AsyncSession

from app.account.models import AccountToken, TokenPurpose
from app.account.repository import AccountTokenRepository
from app.auth.throttle import LoginThrottle, throttle_key
from app.core.config import Settings
from app.core.database import lock_name
from app.core.exceptions import Conflict, InvalidToken, RateLimited
from app.core.models import utc_now
from app.core.security import OneTimeTokens, PasswordHasher
from app.mail import messages
from app.mail.messages import Letter
from app.mail.models import MessageKind, OutboxMessage
from app.mail.repository import OutboxRepository
from app.users.models import User
from app.users.repository import UserRepository
from app.users.service import UserService

HOUR = timedelta(hours=1)
NOT_USABLE = "The token is not valid: it is unknown, has expired, or was already used."
# The page this service serves for a link when no URL template is set.
PAGE_PATHS = {
    TokenPurpose.VERIFY_EMAIL: "/account/verify-email",
    TokenPurpose.PASSWORD_RESET: "/account/reset-password",
}


class AccountService:
    def __init__(self, session: AsyncSession, settings: Settings, hasher: PasswordHasher) -> None:
        self._session = session
        self._settings = settings
        self._hasher = hasher
        self._users = UserRepository(session)
        self._user_service = UserService(session, hasher, settings)
        self._tokens = AccountTokenRepository(session)
        self._outbox = OutboxRepository(session)
        self._throttle = LoginThrottle(session, settings)
        self._one_time = OneTimeTokens(settings)

    async def verify_email(self, token: str) -> None:
        user = await self._use(token, TokenPurpose.VERIFY_EMAIL)
        user.email_verified = True
        await self._users.update(user, {})

    async def request_verification(self, user: User) -> None:
        """Another verification message, at most EMAIL_VERIFICATION_MAX_PER_HOUR an hour."""
        if user.email_verified:
            raise Conflict("This email address is already verified.")
        limit = self._settings.email_verification_max_per_hour
        now = utc_now()
        await lock_name(self._session, f"verification:{user.id}")
        recent = await self._outbox.recent_times(
            MessageKind.VERIFY_EMAIL, user_id=user.id, since=now - HOUR, limit=limit
        )
        if len(recent) >= limit:
            wait = (recent[limit - 1] + HOUR - now).total_seconds()
            raise RateLimited(
                f"At most {limit} verification messages an hour; try again later.",
                retry_after=max(1, math.ceil(wait)),
            )
        await self._outbox.add_for_user(
            MessageKind.VERIFY_EMAIL, user, domain=self._settings.message_id_domain
        )

    async def request_password_reset(self, email: str) -> None:
        """Records a reset request; the message goes out after the commit, if at all.

        Answered alike for every address, so the work is the same whether or
        not an active user has it: the same statements run, each finding its
        user (or none) by itself. Whether there is someone to write to is
        decided later, by the dispatcher, outside the request. Beyond
        PASSWORD_RESET_MAX_PER_HOUR requests for one address in an hour,
        nothing changes.
        """
        address = email.lower()
        now = utc_now()
        limit = self._settings.password_reset_max_per_hour
        # Serialises the count with concurrent requests for the address, and
        # with the dispatcher making this address's token (prepare_message).
        await lock_name(self._session, reset_lock(address))
        recent = await self._outbox.recent_times(
            MessageKind.PASSWORD_RESET, address=address, since=now - HOUR, limit=limit
        )
        if len(recent) >= limit:
            return
        await self._tokens.retire_resets_of_address(address)
        await self._outbox.add_password_reset(address, domain=self._settings.message_id_domain)

    async def confirm_password_reset(self, token: str, new_password: str) -> None:
        """Sets the password, as a password change does (every earlier token stops working);
        the address is verified, having received the link, and the login throttle forgets
        the account's failures."""
        # Hashed before the token is checked, so that valid and invalid
        # tokens take the same time, and no lock is held while hashing.
        password_hash = await self._hasher.hash(new_password)
        user = await self._use(token, TokenPurpose.PASSWORD_RESET)
        user.email_verified = True
        await self._throttle.reset(throttle_key(user, user.username))
        await self._user_service.set_password(user, password_hash)

    async def _use(self, token: str, purpose: TokenPurpose) -> User:
        used = await self._tokens.use(self._one_time.candidate_hashes(token), purpose, utc_now())
        if used is None:
            raise InvalidToken(NOT_USABLE)
        user_id, address = used
        user = await self._users.get(user_id)
        if user is None or not user.is_active or user.email.lower() != address:
            raise InvalidToken(NOT_USABLE)
        return user


class AccountLetters:
    """The letters of the outbox's messages, each with a new one-time token."""

    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self._session = session
        self._settings = settings
        self._users = UserRepository(session)
        self._tokens = AccountTokenRepository(session)
        self._outbox = OutboxRepository(session)
        self._one_time = OneTimeTokens(settings)

    async def prepare(self, message: OutboxMessage) -> Letter | None:
        """The letter for an outbox message; None when there is nothing to send any more.

        Run by the dispatcher in a transaction of its own, committed before
        the letter is handed to SMTP, so the link works when it arrives. The
        token exists in clear only in the letter. The user's row stays
        locked meanwhile, so a password or address change waits for this
        transaction, then retires the token it made.
        """
        if message.kind == MessageKind.PASSWORD_RESET:
            await lock_name(self._session, reset_lock(message.address))
        user = None
        if message.user_id is not None:
            user = await self._users.get_for_update(message.user_id)
        if user is None or not user.is_active or user.email.lower() != message.address:
            return None  # no such user (any more), or the address changed since
        settings = self._settings
        if message.kind == MessageKind.PASSWORD_RESET:
            if user.token_version != message.token_version or await self._outbox.has_newer(message):
                return None  # the password changed since, or a newer request supersedes it
            purpose, lifetime = (
                TokenPurpose.PASSWORD_RESET,
                timedelta(minutes=settings.password_reset_expire_minutes),
            )
            await self._tokens.retire(user.id, purpose)
        else:
            if message.kind == MessageKind.VERIFY_EMAIL and user.email_verified:
                return None
            purpose, lifetime = (
                TokenPurpose.VERIFY_EMAIL,
                timedelta(hours=settings.email_verification_expire_hours),
            )
            await self._tokens.retire_of_message(message.id)
        token, token_hash = self._one_time.new()
        now = utc_now()
        self._tokens.add(
            AccountToken(
                user_id=user.id,
                purpose=purpose,
                token_hash=token_hash,
                address=message.address,
                message_id=message.id,
                created_at=now,
                expires_at=now + lifetime,
            )
        )
        await self._session.flush()
        link = link_for(settings, purpose, token)
        if message.kind == MessageKind.WELCOME:
            subject, body = messages.welcome(
                user.username, link, settings.email_verification_expire_hours
            )
        elif message.kind == MessageKind.VERIFY_EMAIL:
            subject, body = messages.verification(
                user.username, link, settings.email_verification_expire_hours
            )
        else:
            subject, body = messages.password_reset(
                user.username, link, settings.password_reset_expire_minutes
            )
        return Letter(
            to=user.email, subject=subject, body=body, message_id=message.message_id, link=link
        )


def reset_lock(address: str) -> str:
    return f"password-reset:{address}"


def link_for(settings: Settings, purpose: TokenPurpose, token: str) -> str:
    """The template's URL with the token in it, or this service's own page for it."""
    template = (
        settings.email_verification_url
        if purpose == TokenPurpose.VERIFY_EMAIL
        else settings.password_reset_url
    )
    encoded = quote(token, safe="")
    if template is None:
        return f"{settings.public_url}{PAGE_PATHS[purpose]}?token={encoded}"
    return template.replace("{token}", encoded)
