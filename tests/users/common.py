"""Small helpers shared by the user tests."""

from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select

from app.users.models import User
from tests.security.common import USER_FIELDS
from tests.support import (
    Account,
    DatabaseProbe,
    assert_problem,
    assert_unauthenticated,
    login,
    refresh,
)

ME = "/api/v1/users/me"


async def user_count(db: DatabaseProbe) -> int:
    return await db.scalar(select(func.count()).select_from(User)) or 0


async def stored_user(db: DatabaseProbe, user_id: int) -> User:
    user = await db.get(User, user_id)
    assert user is not None, f"user {user_id} is not in the database"
    return user


def assert_utc_time(value: Any) -> datetime:
    """An ISO 8601 time that names its zone, and that zone is UTC."""
    assert isinstance(value, str)
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert moment.tzinfo is not None, f"{value!r} has no timezone"
    assert moment.utcoffset() == timedelta(0), f"{value!r} is not UTC"
    return moment


def assert_user_body(body: Any) -> dict[str, Any]:
    """Exactly the user fields, typed as API.md says, and nothing about passwords."""
    assert isinstance(body, dict)
    assert set(body) == USER_FIELDS
    assert type(body["id"]) is int
    assert body["id"] > 0
    assert body["role"] in ("user", "admin")
    assert isinstance(body["is_active"], bool)
    assert isinstance(body["email_verified"], bool)
    assert_utc_time(body["created_at"])
    assert_utc_time(body["updated_at"])
    return body


async def create_product(client: httpx.AsyncClient, owner: Account, name: str) -> int:
    """Creates a product of `owner` through the API and returns its id."""
    response = await client.post(
        "/api/v1/products", json={"name": name, "price": "5.00"}, headers=owner.headers
    )
    assert response.status_code == 201, response.text
    product_id: int = response.json()["id"]
    return product_id


async def assert_locked_out(client: httpx.AsyncClient, account: Account) -> None:
    """The account's access token, refresh token and password all stopped working."""
    assert_unauthenticated(await client.get(ME, headers=account.headers))
    assert_unauthenticated(await refresh(client, account.refresh_token))
    signed_in = await login(client, account.username, account.password)
    assert assert_problem(signed_in, 400)["error"] == "invalid_grant"
