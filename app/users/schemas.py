from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StrictBool

from app.core.schemas import InputModel, Page, SingleLine
from app.users.models import Role

Username = Annotated[
    str,
    Field(
        min_length=3,
        max_length=50,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="3 to 50 characters of `A-Z a-z 0-9 _ . -`; unique without regard to case.",
        examples=["alice"],
    ),
]
Email = Annotated[
    EmailStr,
    Field(
        max_length=254, description="Unique without regard to case.", examples=["alice@example.com"]
    ),
]
Password = Annotated[
    SingleLine,
    Field(
        min_length=8,
        max_length=128,
        description="8 to 128 characters.",
        examples=["correct horse battery"],
    ),
]
FullName = Annotated[SingleLine, Field(max_length=200, examples=["Alice Liddell"])]


class UserCreate(InputModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "username": "alice",
                "email": "alice@example.com",
                "password": "correct horse battery",
                "full_name": "Alice Liddell",
            }
        }
    )

    username: Username
    email: Email
    password: Password
    full_name: FullName | None = None


class UserUpdate(InputModel):
    """The fields a user may change on their own account; only those sent change.

    `username` and `email` may be left out but not set to null; `full_name`
    may be null, which clears it.
    """

    model_config = ConfigDict(json_schema_extra={"example": {"full_name": "Alice P. Liddell"}})

    # May be left out, may not be null: typed without None so that null is
    # refused (and the schema says so), defaulting to None for "not sent".
    username: Username = Field(default=None)  # type: ignore[assignment]
    email: Email = Field(default=None)  # type: ignore[assignment]
    full_name: FullName | None = None


class UserAdminUpdate(UserUpdate):
    """What an admin may change on any account."""

    model_config = ConfigDict(json_schema_extra={"example": {"role": "admin", "is_active": True}})

    role: Role = Field(default=None)  # type: ignore[assignment]
    is_active: StrictBool = Field(default=None)  # type: ignore[assignment]


class PasswordChange(InputModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "current_password": "correct horse battery",
                "new_password": "a different long passphrase",
            }
        }
    )

    current_password: Annotated[SingleLine, Field(min_length=1, max_length=1024)]
    new_password: Password


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    email: str
    full_name: str | None
    role: Role
    is_active: bool
    email_verified: bool = Field(
        description="Whether the owner of `email` proved it by following a link sent there."
    )
    created_at: datetime
    updated_at: datetime


class UserPage(Page[UserRead]):
    pass
