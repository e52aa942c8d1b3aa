"""`Annotated` aliases for what routes receive from the application's start-up state.

These dependencies, and every other one that only assembles objects, are
`async def`: FastAPI runs a plain `def` dependency in a worker thread, a
thread hop per request for a few attribute reads.
"""

from typing import Annotated

from fastapi import Depends, Request

from app.core.config import Settings
from app.core.security import PasswordHasher, TokenCodec


async def get_app_settings(request: Request) -> Settings:
    """The settings the application was created with (not re-read from the environment)."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


async def get_password_hasher(request: Request) -> PasswordHasher:
    hasher: PasswordHasher = request.app.state.password_hasher
    return hasher


async def get_token_codec(request: Request) -> TokenCodec:
    codec: TokenCodec = request.app.state.token_codec
    return codec


PasswordHasherDep = Annotated[PasswordHasher, Depends(get_password_hasher)]
TokenCodecDep = Annotated[TokenCodec, Depends(get_token_codec)]
