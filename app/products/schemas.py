from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.core.params import PageQuery, PositiveId
from app.core.schemas import InputModel, Money, MultiLine, Page, SingleLine

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


class ProductPage(Page[ProductRead]):
    pass


SortKey = Literal["id", "-id", "name", "-name", "price", "-price", "created_at", "-created_at"]


class ProductQuery(PageQuery):
    q: Annotated[SingleLine, Field(max_length=100)] | None = Field(
        default=None, description="Case-insensitive substring of name or description."
    )
    min_price: Money | None = None
    max_price: Money | None = None
    owner_id: PositiveId | None = None
    sort: SortKey = Field(
        default="id", description="A field, with a leading `-` for descending; ties go by id."
    )

    @field_validator("q")
    @classmethod
    def _empty_is_absent(cls, value: str | None) -> str | None:
        return value or None

    @model_validator(mode="after")
    def _range_is_ordered(self) -> "ProductQuery":
        low, high = self.min_price, self.max_price
        if low is not None and high is not None and low > high:
            raise ValueError("min_price must not be above max_price")
        return self
