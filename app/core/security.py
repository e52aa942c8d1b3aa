"""Password hashing and JWTs: the only module that knows passlib and python-jose."""

import asyncio
import contextlib
import hashlib
import hmac
import os
import secrets
import sys
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from jose import jwt
from jose.exceptions import JOSEError
from passlib.context import CryptContext

from app.core.config import Settings
from app.core.exceptions import NotAuthenticated
from app.core.models import MAX_ID

ALGORITHM = "HS256"
TokenType = Literal["access", "refresh"]
# RFC 8725 section 3.11: explicit typing, so one kind can never pass for the other.
_HEADER_TYPES: dict[TokenType, str] = {"access": "at+jwt", "refresh": "rt+jwt"}
_REQUIRED_CLAIMS = ("exp", "iat", "sub", "jti", "iss", "aud")
# How much less CPU a hashing thread gets than the event loop when both want
# it: Linux's nice 10 weighs about a tenth of nice 0.
HASH_THREAD_NICENESS = 10
# 9999-12-31T23:59:59Z: a later `exp` cannot be a datetime, on any platform.
_MAX_TIMESTAMP = 253_402_300_799

T = TypeVar("T")


class PasswordHasher:
    """argon2id through passlib, always off the event loop.

    Hashes run on `password_hash_concurrency` threads of their own. That
    bounds how many run at once (each holds `memory_kib` of memory and a CPU)
    without starving the thread pool the rest of the application shares, and
    it bounds the memory a worker keeps: glibc keeps a freed hash's memory in
    its thread's arena for reuse, so hashes on the shared pool's changing
    threads kept one `memory_kib` block per arena they had run in, up to 8
    arenas per core.
    """

    def __init__(self, settings: Settings) -> None:
        self._context = CryptContext(
            schemes=["argon2"],
            argon2__type="ID",
            argon2__memory_cost=settings.password_hash_memory_kib,
            argon2__rounds=settings.password_hash_iterations,
            argon2__parallelism=settings.password_hash_parallelism,
        )
        # Threads start when first needed; close() (at shutdown) ends them.
        self._threads = ThreadPoolExecutor(
            settings.password_hash_concurrency,
            thread_name_prefix="password-hash",
            initializer=_yield_to_the_event_loop,
        )
        self._dummy_hash: str | None = None

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def _in_thread(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, function, *args)

    async def hash(self, password: str) -> str:
        digest: str = await self._in_thread(self._context.hash, password)
        return digest

    async def verify(self, password: str, password_hash: str) -> tuple[bool, str | None]:
        """Checks a password; the second value is a new hash when the parameters changed."""
        verified, new_hash = await self._in_thread(
            self._context.verify_and_update, password, password_hash
        )
        return bool(verified), new_hash

    async def burn_time(self, password: str) -> None:
        """Costs what a verification costs, for a user who does not exist.

        Without it, a login for an unknown name answers faster than one for a
        real account, and the difference tells who has an account.
        """
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(16))
        await self.verify(password, self._dummy_hash)


def _yield_to_the_event_loop() -> None:
    """Lower this hashing thread's CPU priority below the event loop's.

    A hash is tens of milliseconds of CPU. During a burst of logins the
    hashing threads would otherwise share the cores evenly with the event
    loop, and every other request of the worker would wait behind them. At
    a lower priority they take what the event loop leaves, and still all of
    a core when it is idle. Linux sets niceness per thread; elsewhere this
    does nothing.
    """
    if sys.platform == "linux":
        # Refused only by an unusual sandbox: the thread then keeps its priority.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_THREAD_NICENESS)


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    token_version: int
    jti: str
    family_id: str | None
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    jti: str
    expires_at: datetime


class TokenCodec:
    """Signs and checks access and refresh tokens (HS256)."""

    def __init__(self, settings: Settings) -> None:
        self._signing_key = settings.signing_key
        self._verification_keys = settings.verification_keys
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._lifetimes: dict[TokenType, timedelta] = {
            "access": timedelta(minutes=settings.access_token_expire_minutes),
            "refresh": timedelta(days=settings.refresh_token_expire_days),
        }

    @property
    def access_token_seconds(self) -> int:
        return int(self._lifetimes["access"].total_seconds())

    def issue(
        self,
        token_type: TokenType,
        user_id: int,
        token_version: int,
        *,
        family_id: str | None = None,
    ) -> IssuedToken:
        now = datetime.now(UTC)
        expires_at = now + self._lifetimes[token_type]
        jti = uuid.uuid4().hex
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": str(user_id),
            "iat": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
            "jti": jti,
            "type": token_type,
            "ver": token_version,
        }
        if family_id is not None:
            claims["fam"] = family_id
        token = jwt.encode(
            claims,
            self._signing_key,
            algorithm=ALGORITHM,
            headers={"typ": _HEADER_TYPES[token_type]},
        )
        return IssuedToken(token=token, jti=jti, expires_at=expires_at)

    def decode(
        self, token: str, token_type: TokenType, *, allow_expired: bool = False
    ) -> TokenClaims:
        """Checks signature, algorithm, issuer, audience, type and expiry.

        Any way a token can be wrong ends in the same NotAuthenticated: the
        caller learns nothing about which check failed.
        """
        # python-jose turns `require_exp` into `verify_exp`, so when an expired
        # token is acceptable the presence of `exp` is checked in _claims_from.
        required = [c for c in _REQUIRED_CLAIMS if not (allow_expired and c == "exp")]
        try:
            header = jwt.get_unverified_header(token)
            if header.get("typ") != _HEADER_TYPES[token_type]:
                raise NotAuthenticated("The token is not valid.")
            payload = jwt.decode(
                token,
                self._verification_keys,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={
                    "verify_exp": not allow_expired,
                    **{f"require_{claim}": True for claim in required},
                },
            )
            return _claims_from(payload, token_type)
        except (JOSEError, ValueError, TypeError, KeyError, AttributeError) as error:
            raise NotAuthenticated("The token is not valid or has expired.") from error


def _claims_from(payload: dict[str, Any], token_type: TokenType) -> TokenClaims:
    if payload.get("type") != token_type:
        raise NotAuthenticated("The token is not valid.")
    subject, version, jti = payload["sub"], payload.get("ver"), payload["jti"]
    family, expires = payload.get("fam"), payload["exp"]
    if not (isinstance(subject, str) and subject.isascii() and subject.isdigit()):
        raise ValueError("sub is not a user id")
    if not 0 < int(subject) <= MAX_ID:
        raise ValueError("sub is not a user id")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError("ver is not an integer")
    if not isinstance(jti, str):
        raise ValueError("jti is not a string")
    if not isinstance(expires, int) or isinstance(expires, bool):
        raise ValueError("exp is not an integer")
    if not 0 <= expires <= _MAX_TIMESTAMP:
        raise ValueError("exp is out of range")
    needs_family = token_type == "refresh"  # noqa: S105  (a token kind, not a secret)
    if needs_family and not isinstance(family, str):
        raise ValueError("a refresh token needs its family")
    return TokenClaims(
        user_id=int(subject),
        token_version=version,
        jti=jti,
        family_id=family if isinstance(family, str) else None,
        expires_at=datetime.fromtimestamp(expires, UTC),
    )


class OneTimeTokens:
    """The secrets of account flows (email verification, password reset).

    A token is 256 random bits, URL-safe; only its HMAC-SHA256 under the
    signing key is stored. Tokens this random need no slow password hash to
    resist guessing, and the key means a copy of the database alone cannot
    even check a guess. Hashes under retired keys (PREVIOUS_SECRET_KEYS) are
    accepted too, so rotating SECRET_KEY does not void links already sent.
    """

    _DOMAIN = b"storefront one-time token\x00"  # never the input of a JWT signature

    def __init__(self, settings: Settings) -> None:
        self._keys = [key.encode() for key in settings.verification_keys]

    def new(self) -> tuple[str, str]:
        """A fresh token and the hash to store for it."""
        token = secrets.token_urlsafe(32)
        return token, self._digest(self._keys[0], token)

    def candidate_hashes(self, token: str) -> list[str]:
        """What the stored hash of `token` may be, one per key still accepted."""
        return [self._digest(key, token) for key in self._keys]

    def _digest(self, key: bytes, token: str) -> str:
        return hmac.new(key, self._DOMAIN + token.encode(), hashlib.sha256).hexdigest()
