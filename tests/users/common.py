"""Small helpers shared by the user tests."""

from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select

from app.users.models import User
from tests.support import DatabaseProbe, assert_problem

USER_FIELDS = {
    "id",
    "username",
    "email",
    "full_name",
    "role",
    "is_active",
    "created_at",
    "updated_at",
}


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
    assert_utc_time(body["created_at"])
    assert_utc_time(body["updated_at"])
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_unauthenticated(response: httpx.Response) -> None:
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
