from typing import Annotated

from fastapi import Depends
from fastapi.security import OAuth2PasswordBearer

from app.auth.service import STALE_ACCESS_TOKEN, AuthService, still_signed_in
from app.core.context import user_id_var
from app.core.database import Database, SessionDep, get_database
from app.core.dependencies import PasswordHasherDep, SettingsDep, TokenCodecDep
from app.core.exceptions import InvalidAccessToken, NotAuthenticated
from app.users.models import User
from app.users.repository import SignedInRow, UserReader

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


async def get_current_user(
    token: Annotated[str | None, Depends(bearer_token)], auth: AuthServiceDep
) -> User:
    """The signed-in user as an ORM object in the request's unit of work: for
    routes that change something (the user itself, or what it owns)."""
    if not token:
        raise NotAuthenticated("This route needs a bearer access token.")
    try:
        user = await auth.authenticate(token)
    except NotAuthenticated as refused:
        raise InvalidAccessToken(refused.detail) from refused
    user_id_var.set(user.id)
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_signed_in_row(
    token: Annotated[str | None, Depends(bearer_token)],
    codec: TokenCodecDep,
    database: Annotated[Database, Depends(get_database)],
) -> SignedInRow:
    """The signed-in user as a row, read outside any transaction: for routes
    that only read. The same checks as get_current_user, one statement, on
    the primary (a user reads their own changes at once)."""
    if not token:
        raise NotAuthenticated("This route needs a bearer access token.")
    try:
        claims = codec.decode(token, "access")
    except NotAuthenticated as refused:
        raise InvalidAccessToken(refused.detail) from refused
    row = await database.read(
        lambda connection: UserReader(connection).signed_in(claims.user_id), replica_allowed=False
    )
    if row is None or not still_signed_in(row, claims):
        raise InvalidAccessToken(STALE_ACCESS_TOKEN)
    user_id_var.set(row.id)
    return row


SignedIn = Annotated[SignedInRow, Depends(get_signed_in_row)]
