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


class RefreshRequest(InputModel):
    model_config = ConfigDict(json_schema_extra={"example": {"refresh_token": "eyJhbGciOi..."}})

    refresh_token: RefreshTokenText
