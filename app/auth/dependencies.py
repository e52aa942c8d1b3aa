from typing import Annotated, TypeVar

from fastapi import Depends
from fastapi.security import OAuth2PasswordBearer

from app.auth.service import STALE_ACCESS_TOKEN, AuthService, still_signed_in
from app.core.context import user_id_var
from app.core.database import Database, SessionDep, get_database
from app.core.dependencies import PasswordHasherDep, SettingsDep, TokenCodecDep
from app.core.exceptions import InvalidAccessToken, NotAuthenticated
from app.core.security import TokenClaims, TokenCodec
from app.users.models import Actor, User
from app.users.repository import SignedInRow, UserReader, UserRepository

_User = TypeVar("_User", User, SignedInRow)

TOKEN_URL = "/api/v1/auth/token"  # noqa: S105  (a path, not a secret)

bearer_token = OAuth2PasswordBearer(
    tokenUrl=TOKEN_URL,
    auto_error=False,
    description="Sign in with a username (or email) and password; the access token is sent "
    "as `Authorization: Bearer <token>`.",
)


async def get_auth_service(
    session: SessionDep, settings: SettingsDep, hasher: PasswordHasherDep, codec: TokenCodecDep
) -> AuthService:
    return AuthService(session, settings, hasher, codec)


AuthServiceDep = Annotated[AuthService, Depends(get_auth_service)]


def _access_claims(token: str | None, codec: TokenCodec) -> TokenClaims:
    """The claims of a request's bearer access token (401 without one or when it does not hold)."""
    if not token:
        raise NotAuthenticated("This route needs a bearer access token.")
    try:
        return codec.decode(token, "access")
    except NotAuthenticated as refused:
        raise InvalidAccessToken(refused.detail) from refused


def _still_signed_in(user: _User | None, claims: TokenClaims) -> _User:
    """The token's user, if the token still holds for it (else 401)."""
    if user is None or not still_signed_in(user, claims):
        raise InvalidAccessToken(STALE_ACCESS_TOKEN)
    user_id_var.set(user.id)
    return user


async def get_current_user(
    token: Annotated[str | None, Depends(bearer_token)], codec: TokenCodecDep, session: SessionDep
) -> User:
    """The signed-in user as an ORM object in the request's unit of work: for
    routes that change the user itself."""
    claims = _access_claims(token, codec)
    return _still_signed_in(await UserRepository(session).get(claims.user_id), claims)


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_actor(
    token: Annotated[str | None, Depends(bearer_token)], codec: TokenCodecDep, session: SessionDep
) -> Actor:
    """Who asks for a change that only needs to know who (owner or admin):
    one Core statement in the request's own transaction, as the change
    itself, and no ORM object (a product's writes, the admin's routes)."""
    claims = _access_claims(token, codec)
    row = await UserReader(await session.connection()).actor(claims.user_id)
    user = _still_signed_in(row, claims)
    return Actor(user.id, user.role)


CurrentActor = Annotated[Actor, Depends(get_actor)]


async def get_signed_in_row(
    token: Annotated[str | None, Depends(bearer_token)],
    codec: TokenCodecDep,
    database: Annotated[Database, Depends(get_database)],
) -> SignedInRow:
    """The signed-in user as a row, read outside any transaction: for routes
    that only read. The same checks as get_current_user, one statement, on
    the primary (a user reads their own changes at once)."""
    claims = _access_claims(token, codec)
    row = await database.read(
        lambda connection: UserReader(connection).signed_in(claims.user_id), replica_allowed=False
    )
    return _still_signed_in(row, claims)


SignedIn = Annotated[SignedInRow, Depends(get_signed_in_row)]
