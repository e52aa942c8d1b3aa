"""Pydantic building blocks shared by every domain."""

import re
from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

_FORBIDDEN_IN_LINE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_FORBIDDEN_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def _reject(pattern: re.Pattern[str], what: str) -> Any:
    def check(value: str) -> str:
        if pattern.search(value):
            raise ValueError(f"{what} must not contain control characters or lone surrogates")
        return value

    return AfterValidator(check)


# Text that PostgreSQL can store and a log line can show: no NUL (which
# PostgreSQL refuses), no lone surrogates (which cannot be encoded as UTF-8).
SingleLine = Annotated[str, _reject(_FORBIDDEN_IN_LINE, "Text")]
MultiLine = Annotated[str, _reject(_FORBIDDEN_IN_TEXT, "Text")]

_JSON_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_CENT = Decimal("0.01")
MAX_AMOUNT = Decimal("1000000000")


def _numeric_string(value: Any) -> Any:
    """Accepts a string only if it is written like a JSON number ("12.50", not " 1_2 ")."""
    if isinstance(value, str) and not _JSON_NUMBER.fullmatch(value):
        raise ValueError("must be a number, or a string written as a decimal number")
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return value


def _to_cents(value: Decimal) -> Decimal:
    # Normalises "19.990" and "1E+2" to two places, and -0 to 0.
    return value.quantize(_CENT) + Decimal("0.00")


# A decimal amount, exact to the cent: a JSON number or a numeric string in,
# a JSON number out.
Money = Annotated[
    Decimal,
    # Ahead of the BeforeValidator, so the bounds land on the decimal schema
    # itself and the JSON schema says `minimum` / `maximum`, not `ge` / `le`.
    Field(ge=0, le=MAX_AMOUNT, decimal_places=2, allow_inf_nan=False),
    BeforeValidator(_numeric_string),
    AfterValidator(_to_cents),
    PlainSerializer(float, return_type=float, when_used="json"),
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
