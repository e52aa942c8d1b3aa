from typing import Annotated

from fastapi import Depends
from fastapi.security import OAuth2PasswordBearer

from app.auth.service import AuthService
from app.core.context import user_id_var
from app.core.database import SessionDep
from app.core.dependencies import PasswordHasherDep, SettingsDep, TokenCodecDep
from app.core.exceptions import InvalidAccessToken, NotAuthenticated
from app.users.models import User

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
    if not token:
        raise NotAuthenticated("This route needs a bearer access token.")
    try:
        user = await auth.authenticate(token)
    except NotAuthenticated as refused:
        raise InvalidAccessToken(refused.detail) from refused
    user_id_var.set(user.id)
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]
