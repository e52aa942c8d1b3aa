from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from app.core.params import PageQuery, PositiveId
from app.core.schemas import InputModel, Money, MultiLine, Page, SingleLine
from app.products.paging import CURSOR_PATTERN, MAX_CURSOR_LENGTH, Cursor

Name = Annotated[SingleLine, Field(min_length=1, max_length=200, examples=["Espresso cup"])]
Description = Annotated[MultiLine, Field(max_length=5000, examples=["Porcelain, 80 ml."])]
Sku = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9-]+$",
        description="1 to 64 characters of `A-Z a-z 0-9 -`; unique among products.",
        examples=["CUP-080-WHT"],
    ),
]
PRICE_DESCRIPTION = (
    "A decimal from 0 to 1,000,000,000 with at most 2 decimal places, as a JSON number or a "
    "numeric string; returned as a JSON number."
)
_EXAMPLE: dict[str, Any] = {
    "name": "Espresso cup",
    "description": "Porcelain, 80 ml.",
    "price": "12.50",
    "tax": "2.38",
    "sku": "CUP-080-WHT",
}


class ProductCreate(InputModel):
    """A product as a client writes it. PUT takes the same body: what it leaves out becomes null."""

    model_config = ConfigDict(json_schema_extra={"example": _EXAMPLE})

    name: Name
    description: Description | None = None
    price: Annotated[Money, Field(description=PRICE_DESCRIPTION)]
    tax: Annotated[Money, Field(description=PRICE_DESCRIPTION)] | None = None
    sku: Sku | None = None


class ProductPatch(InputModel):
    """Only the fields sent change. `name` and `price` cannot be null; the others can."""

    model_config = ConfigDict(json_schema_extra={"example": {"price": "11.90"}})

    # May be left out, may not be null: typed without None so that null is
    # refused (and the schema says so), defaulting to None for "not sent".
    name: Name = Field(default=None)  # type: ignore[assignment]
    description: Description | None = None
    price: Annotated[Money, Field(description=PRICE_DESCRIPTION)] = Field(default=None)  # type: ignore[assignment]
    tax: Annotated[Money, Field(description=PRICE_DESCRIPTION)] | None = None
    sku: Sku | None = None


class ProductRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str | None
    price: Money
    tax: Money | None
    sku: str | None
    owner_id: int
    created_at: datetime
    updated_at: datetime
    version: int = Field(description="Raised by every change; the `ETag` is this, quoted.")


TOTAL_DESCRIPTION = (
    "How many products match the filters, over all pages. A `total` of 10,000 or less (the "
    "`EXACT_TOTAL_LIMIT` setting) is exact. On PostgreSQL, when the database expects more "
    "matches than that, counting them would take as long as reading them all, so `total` is "
    "then its estimate instead: above 10,000, and possibly off. The last page of an `offset` "
    "walk always carries the exact count. To walk a list, follow the `Link` header's "
    '`rel="next"` until there is none rather than relying on `total`.'
)


class ProductPage(Page[ProductRead]):
    total: int = Field(description=TOTAL_DESCRIPTION)
    offset: int = Field(description="The `offset` asked for; 0 for a page asked by `cursor`.")


SortKey = Literal["id", "-id", "name", "-name", "price", "-price", "created_at", "-created_at"]


CURSOR_DESCRIPTION = (
    'Where to continue, as given by the `Link` header (`rel="next"`) of the page before, '
    "with the same `sort` and filters as that page. Paging by cursor costs the same however "
    "far into the list it is, where a large `offset` gets slower the larger it is; the two "
    "cannot be used together. Opaque: a cursor this service did not make, or made for "
    "another `sort`, gets 422."
)


class ProductQuery(PageQuery):
    q: Annotated[SingleLine, Field(max_length=100)] | None = Field(
        default=None, description="Case-insensitive substring of name or description."
    )
    min_price: Money | None = None
    max_price: Money | None = None
    owner_id: PositiveId | None = None
    sort: SortKey = Field(
        default="id",
        description="A field, with a leading `-` for descending; ties go by id.",
        # Names for generated clients' enum members (`-price` is not a name):
        # PRICE_DESC rather than VALUE_5.
        json_schema_extra={
            "x-enum-varnames": [
                key.removeprefix("-").upper() + ("_DESC" if key.startswith("-") else "")
                for key in get_args(SortKey)
            ]
        },
    )
    # After `sort`: its validator reads the sort.
    cursor: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_CURSOR_LENGTH,
        pattern=CURSOR_PATTERN,
        description=CURSOR_DESCRIPTION,
    )

    @field_validator("q")
    @classmethod
    def _empty_is_absent(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("cursor")
    @classmethod
    def _cursor_is_ours(cls, value: str | None, info: ValidationInfo) -> str | None:
        sort = info.data.get("sort")
        if value is not None and sort is not None:
            Cursor.decode(value, sort)  # InvalidCursor is a ValueError: a 422 on `cursor`
        return value

    @model_validator(mode="after")
    def _range_is_ordered(self) -> "ProductQuery":
        low, high = self.min_price, self.max_price
        if low is not None and high is not None and low > high:
            raise ValueError("min_price must not be above max_price")
        return self

    @model_validator(mode="after")
    def _cursor_or_offset(self) -> "ProductQuery":
        if self.cursor is not None and "offset" in self.model_fields_set:
            raise ValueError("cursor and offset cannot be used together")
        return self

    @property
    def position(self) -> Cursor | None:
        """The decoded `cursor` (checked already): the page starts after it."""
        return None if self.cursor is None else Cursor.decode(self.cursor, self.sort)
