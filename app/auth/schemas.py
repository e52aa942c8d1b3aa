from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.core.schemas import InputModel, SingleLine

RefreshTokenText = Annotated[SingleLine, Field(min_length=1, max_length=4096)]


class TokenPairRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6ImF0K2p3dCJ9...",
                "token_type": "bearer",
                "expires_in": 900,
                "refresh_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6InJ0K2p3dCJ9...",
            }
        }
    )

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int = Field(description="Seconds until the access token expires.")
    refresh_token: str


# A form field sent empty counts as omitted (RFC 6749 section 3.1; FastAPI
# reads it so), so the form's schema admits the empty string.
FormText = Annotated[SingleLine, Field(max_length=1024)]


class TokenRequest(BaseModel):
    """The token endpoint's form (RFC 6749): a password grant or a refresh grant.

    Which fields are needed depends on `grant_type`, so none is required by
    itself; one sent empty counts as omitted. Parameters an OAuth2 client
    adds (`client_id`, ...) are ignored.
    """

    model_config = ConfigDict(extra="ignore")

    grant_type: str | None = Field(
        default=None,
        description="`password` (the default) or `refresh_token`.",
        examples=["password"],
    )
    username: Annotated[FormText, Field(max_length=320)] | None = Field(
        default=None, description="Username or email (password grant).", examples=["alice"]
    )
    password: FormText | None = Field(
        default=None,
        description="The password (password grant).",
        examples=["correct horse battery"],
    )
    refresh_token: Annotated[FormText, Field(max_length=4096)] | None = Field(
        default=None, description="The refresh token (refresh grant)."
    )
    scope: str = Field(default="", description="Ignored: there are no scopes.")


class RefreshRequest(InputModel):
    model_config = ConfigDict(json_schema_extra={"example": {"refresh_token": "eyJhbGciOi..."}})

    refresh_token: RefreshTokenText
