"""`Annotated` aliases for what routes receive from the application's start-up state."""

from typing import Annotated

from fastapi import Depends, Request

from app.core.config import Settings, get_settings
from app.core.security import PasswordHasher, TokenCodec

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_password_hasher(request: Request) -> PasswordHasher:
    hasher: PasswordHasher = request.app.state.password_hasher
    return hasher


def get_token_codec(request: Request) -> TokenCodec:
    codec: TokenCodec = request.app.state.token_codec
    return codec


PasswordHasherDep = Annotated[PasswordHasher, Depends(get_password_hasher)]
TokenCodecDep = Annotated[TokenCodec, Depends(get_token_codec)]
