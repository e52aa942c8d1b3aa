"""Pydantic building blocks shared by every domain."""

import re
from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)

# Text that PostgreSQL can store and a log line can show. The pattern is both
# the rule and its documentation (it lands in the OpenAPI schema); a lone
# surrogate, which cannot be encoded as UTF-8, fails Pydantic's own check.
SingleLine = Annotated[str, Field(pattern=r"^[^\x00-\x1F\x7F]*$")]
# The same, but tabs and line breaks are allowed.
MultiLine = Annotated[str, Field(pattern=r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F]*$")]

MAX_AMOUNT = Decimal("1000000000")
# A numeric string: plain digits, at most two decimals, within the bounds.
# Stricter than what Python's Decimal reads (no " 1_0", "1e2" or "12.500"),
# and exactly what the OpenAPI document promises.
_MONEY_STRING = r"^(?:(?:0|[1-9][0-9]{0,8})(?:\.[0-9]{1,2})?|1000000000(?:\.0{1,2})?)$"
_MONEY_STRING_RE = re.compile(_MONEY_STRING)
_CENT = Decimal("0.01")
_MONEY_SCHEMA = {
    "anyOf": [
        {"type": "number", "minimum": 0, "maximum": int(MAX_AMOUNT), "multipleOf": 0.01},
        {"type": "string", "pattern": _MONEY_STRING},
    ]
}


def _money_input(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    if isinstance(value, str) and not _MONEY_STRING_RE.fullmatch(value):
        raise ValueError(
            "must be a number, or a string of digits with at most two decimals, "
            "from 0 to 1000000000"
        )
    return value


def _to_cents(value: Decimal) -> Decimal:
    # Normalises 12.5 to 12.50 and -0 to 0.
    return value.quantize(_CENT) + Decimal("0.00")


# A decimal amount, exact to the cent: a JSON number or a numeric string in,
# a JSON number out.
Money = Annotated[
    Decimal,
    Field(ge=0, le=MAX_AMOUNT, decimal_places=2, allow_inf_nan=False),
    BeforeValidator(_money_input),
    AfterValidator(_to_cents),
    PlainSerializer(float, return_type=float, when_used="json"),
    WithJsonSchema(_MONEY_SCHEMA, mode="validation"),
]


class InputModel(BaseModel):
    """A request body: unknown fields are an error, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int = Field(description="How many items match the query, over all pages.")
    limit: int
    offset: int
