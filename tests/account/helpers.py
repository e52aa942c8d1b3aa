"""What the account tests share: the one answer every unusable token gets."""

from typing import Any

import httpx
from sqlalchemy import update

from app.account.models import AccountToken
from app.core.database import Database
from app.core.models import utc_now
from tests.support import assert_problem

VERIFY = "/api/v1/auth/verify-email"
RESEND = "/api/v1/users/me/verification"
RESET = "/api/v1/auth/password-reset"
CONFIRM = "/api/v1/auth/password-reset/confirm"
ME = "/api/v1/users/me"
NEW_PASSWORD = "a brand new passphrase"


def assert_unusable_token(response: httpx.Response) -> dict[str, Any]:
    """The 400 for a token that cannot be used; the body without its per-request parts,
    which is the same for every reason."""
    body = assert_problem(response, 400)
    return {key: value for key, value in body.items() if key != "request_id"}


async def expire_tokens(database: Database) -> None:
    """Moves every one-time token's expiry into the past, as the passing of time would."""
    async with database.sessionmaker() as session, session.begin():
        await session.execute(update(AccountToken).values(expires_at=utc_now()))
