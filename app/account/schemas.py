from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from app.core.schemas import InputModel, SingleLine
from app.users.schemas import Email, Password

# What a client sends is checked against the stored hashes, whatever its
# form: any text that is not a live token gets the one 400, never a 422.
OneTimeToken = Annotated[
    SingleLine,
    Field(
        min_length=1,
        max_length=1024,
        description="The token from the link in the message.",
        examples=["Yq3r0oY3n9cLxW1m2nBvQeT8s7uKdPzA4fGhJkL5xS0"],
    ),
]


class EmailVerification(InputModel):
    model_config = ConfigDict(
        json_schema_extra={"example": {"token": "Yq3r0oY3n9cLxW1m2nBvQeT8s7uKdPzA4fGhJkL5xS0"}}
    )

    token: OneTimeToken


class PasswordResetRequest(InputModel):
    model_config = ConfigDict(json_schema_extra={"example": {"email": "alice@example.com"}})

    email: Email


class PasswordResetConfirmation(InputModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "token": "Yq3r0oY3n9cLxW1m2nBvQeT8s7uKdPzA4fGhJkL5xS0",
                "new_password": "a brand new passphrase",
            }
        }
    )

    token: OneTimeToken
    new_password: Password


class Accepted(BaseModel):
    """The request was taken; a message will be sent (or, for a reset, may be)."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "detail": "If an active account has this address, a message with a link to "
                "reset its password is on its way."
            }
        }
    )

    detail: str
