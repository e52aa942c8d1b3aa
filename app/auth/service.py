import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import RefreshFamily, RefreshToken
from app.auth.repository import RefreshTokenRepository
from app.auth.throttle import LoginThrottle, throttle_key
from app.core.config import Settings
from app.core.exceptions import InvalidGrant, NotAuthenticated, RefreshTokenReused
from app.core.models import utc_now
from app.core.security import PasswordHasher, TokenClaims, TokenCodec
from app.users.models import User
from app.users.repository import SignedInRow, UserRepository


def still_signed_in(user: User | SignedInRow, claims: TokenClaims) -> bool:
    """An access token holds while its user is active and has not changed its
    password nor been signed out everywhere since (the token's version)."""
    return bool(user.is_active) and user.token_version == claims.token_version


STALE_ACCESS_TOKEN = "The access token is no longer valid."  # noqa: S105  (a message)


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


class AuthService:
    def __init__(
        self,
        session: AsyncSession,
        settings: Settings,
        hasher: PasswordHasher,
        codec: TokenCodec,
    ) -> None:
        self._users = UserRepository(session)
        self._tokens = RefreshTokenRepository(session)
        self._throttle = LoginThrottle(session, settings)
        self._hasher = hasher
        self._codec = codec

    async def login(self, name: str, password: str) -> TokenPair:
        """Password grant, throttled per account.

        Every path costs one password verification and answers the same way
        whether or not `name` exists, so neither the body, the status nor the
        time tells an attacker who has an account.
        """
        user = await self._users.get_by_login(name)
        key = throttle_key(user, name)
        await self._throttle.check(key)

        if user is None:
            await self._hasher.burn_time(password)
            verified, new_hash = False, None
        else:
            verified, new_hash = await self._hasher.verify(password, user.password_hash)

        if user is None or not verified or not user.is_active:
            await self._throttle.record_failure(key)
            raise InvalidGrant("Incorrect username or password.")

        await self._throttle.reset(key)
        if new_hash is not None:  # hashing parameters changed since this hash was made
            user.password_hash = new_hash
        return self._issue_pair(user, family=None)

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Rotates: the token presented is retired and a new pair issued in its family."""
        claims = self._codec.decode(refresh_token, "refresh")
        family = await self._tokens.get_family_for_update(claims.family_id or "")
        if family is None or family.revoked_at is not None or family.user_id != claims.user_id:
            raise NotAuthenticated("The refresh token has been revoked.")
        stored = await self._tokens.get(claims.jti)
        if stored is None or stored.family_id != family.id:
            raise NotAuthenticated("The refresh token is not valid.")
        if stored.used_at is not None:
            # A retired token came back: either its owner or a thief holds a
            # copy. Revoke the whole login; its owner signs in again.
            family.revoked_at = utc_now()
            raise RefreshTokenReused(
                "The refresh token was already used; this login has been revoked."
            )
        user = await self._users.get(family.user_id)
        if user is None or not user.is_active or user.token_version != claims.token_version:
            raise NotAuthenticated("The refresh token is no longer valid.")
        stored.used_at = utc_now()
        return self._issue_pair(user, family=family)

    async def refresh_grant(self, refresh_token: str) -> TokenPair:
        """The token endpoint's refresh grant (RFC 6749 section 6): `refresh`'s rules, with
        RFC 6749's answer for a token that is not valid (400 invalid_grant, not 401).

        A reused token still revokes its login: InvalidGrant keeps the changes.
        """
        try:
            return await self.refresh(refresh_token)
        except NotAuthenticated as refused:
            raise InvalidGrant(refused.detail) from refused

    async def logout(self, refresh_token: str) -> None:
        """Revokes the token's whole family; an expired or already revoked one is fine."""
        claims = self._codec.decode(refresh_token, "refresh", allow_expired=True)
        family = await self._tokens.get_family_for_update(claims.family_id or "")
        if family is not None and family.revoked_at is None:
            family.revoked_at = utc_now()

    def _issue_pair(self, user: User, family: RefreshFamily | None) -> TokenPair:
        if family is None:
            family = RefreshFamily(id=uuid.uuid4().hex, user_id=user.id)
            self._tokens.add_family(family)
        refresh = self._codec.issue("refresh", user.id, user.token_version, family_id=family.id)
        self._tokens.add(
            RefreshToken(jti=refresh.jti, family_id=family.id, expires_at=refresh.expires_at)
        )
        access = self._codec.issue("access", user.id, user.token_version)
        return TokenPair(
            access_token=access.token,
            refresh_token=refresh.token,
            expires_in=self._codec.access_token_seconds,
        )
