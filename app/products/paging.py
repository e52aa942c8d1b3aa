"""Keyset paging: the opaque `cursor` of the next page, in a product page's `Link` header.

A cursor names the last product of a page by its sort key and id: the next
page is the products that sort after it. Unlike an offset, reaching it costs
the same on the first page and on the millionth, and a product added or
deleted meanwhile does not shift the pages.

It is base64url (no padding) of a compact JSON array `[sort, value, id]`:
the sort it was made for, the product's value of that field (null for the
id sorts; a decimal string for price, an ISO 8601 time for created_at) and
its id. Clients treat it as opaque. A cursor is not signed, since it only
says where to resume in a list anyone may read; it is checked instead, so
that a damaged or altered one is a 422, never a server error.
"""

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from app.core.models import MAX_ID
from app.core.schemas import MAX_AMOUNT

# Longest cursor: a 200-character name of 4-byte characters, JSON-escaped at
# worst, in base64. Anything longer was not made here.
MAX_CURSOR_LENGTH = 4096
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"
_CURSOR_RE = re.compile(CURSOR_PATTERN)
_CONTROL = re.compile(r"[\x00-\x1F\x7F]")
_PRICE = re.compile(r"^(?:0|[1-9][0-9]{0,9})\.[0-9]{2}$")


class InvalidCursor(ValueError):
    """The cursor was not made by this service for this sort."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ends: the sort, the last product's value of its field, and its id."""

    sort: str
    value: str | Decimal | datetime | None
    id: int

    @property
    def field(self) -> str:
        return self.sort.removeprefix("-")

    @classmethod
    def after(cls, product: Any, sort: str) -> "Cursor":
        """The cursor of the page that follows `product` in the order `sort`."""
        field = sort.removeprefix("-")
        value = None if field == "id" else getattr(product, field)
        return cls(sort, value, product.id)

    def encode(self) -> str:
        value: Any = self.value
        if isinstance(value, Decimal):
            value = f"{value:.2f}"
        elif isinstance(value, datetime):
            value = value.isoformat()
        raw = json.dumps([self.sort, value, self.id], ensure_ascii=False, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode("ascii")

    @classmethod
    def decode(cls, text: str, sort: str) -> "Cursor":
        """The cursor `text` stands for, if it was made for `sort`; else InvalidCursor."""
        if len(text) > MAX_CURSOR_LENGTH or not _CURSOR_RE.fullmatch(text):
            raise InvalidCursor("not a cursor this service made")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            decoded = json.loads(raw.decode("utf-8"))
        # ValueError covers UnicodeDecodeError and JSONDecodeError; a deeply
        # nested array exhausts the parser's recursion instead.
        except (binascii.Error, ValueError, RecursionError):
            raise InvalidCursor("not a cursor this service made") from None
        if not (isinstance(decoded, list) and len(decoded) == 3):
            raise InvalidCursor("not a cursor this service made")
        made_for, value, product_id = decoded
        if made_for != sort:
            raise InvalidCursor(
                "the cursor belongs to another sort order; "
                "send it with the same `sort` as the page that returned it"
            )
        if type(product_id) is not int or not 0 < product_id <= MAX_ID:
            raise InvalidCursor("not a cursor this service made")
        return cls(sort, _value(sort.removeprefix("-"), value), product_id)


def _value(field: str, value: Any) -> str | Decimal | datetime | None:
    """The sort field's value from a cursor, checked as strictly as the field itself."""
    if field == "id":
        if value is not None:
            raise InvalidCursor("not a cursor this service made")
        return None
    if not isinstance(value, str):
        raise InvalidCursor("not a cursor this service made")
    if field == "name":
        if not 0 < len(value) <= 200 or _CONTROL.search(value) or not _encodable(value):
            raise InvalidCursor("not a cursor this service made")
        return value
    if field == "price":
        if not _PRICE.fullmatch(value) or Decimal(value) > MAX_AMOUNT:
            raise InvalidCursor("not a cursor this service made")
        return Decimal(value)
    # created_at: an aware ISO 8601 time, as encode() writes it.
    try:
        moment = datetime.fromisoformat(value)
        if moment.utcoffset() is None:
            raise InvalidCursor("not a cursor this service made")
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):  # not a time; or one that leaves the calendar in UTC
        raise InvalidCursor("not a cursor this service made") from None


def _encodable(text: str) -> bool:
    """False for a lone surrogate (JSON can write one), which no database can store."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
