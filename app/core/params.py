"""Path and query parameters shared by routers."""

from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import BaseModel, BeforeValidator, Field

from app.core.models import MAX_ID


def _plain_digits(value: Any) -> Any:
    """Refuses what Python's int() would forgive in a URL: " 1", "+1", "1_0", "1.0"."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("must be written as plain digits")
    return value


# An integer as a URL writes it: ASCII digits only.
PlainInt = Annotated[int, BeforeValidator(_plain_digits)]
# The constraint before the validator, so the schema shows it as
# exclusiveMinimum / maximum.
PositiveId = Annotated[int, Field(gt=0, le=MAX_ID), BeforeValidator(_plain_digits)]

# Path() first: FastAPI then renders its bounds in the OpenAPI schema.
IdPath = Annotated[
    int,
    Path(gt=0, le=MAX_ID, description="A positive integer id."),
    BeforeValidator(_plain_digits),
]


class PageQuery(BaseModel):
    limit: PlainInt = Field(default=20, ge=1, le=100, description="Items per page, 1 to 100.")
    offset: PlainInt = Field(default=0, ge=0, le=MAX_ID, description="Items to skip.")


PageParams = Annotated[PageQuery, Query()]
