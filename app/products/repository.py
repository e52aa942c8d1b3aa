import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    func,
    literal,
    literal_column,
    or_,
    select,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.core.database import flush_unique
from app.core.models import utc_now
from app.products.models import Product
from app.products.paging import Cursor
from app.products.schemas import ProductQuery

Filters = list[ColumnElement[bool]]
_UNIQUE_KEYS = {"sku": ("uq_products_sku", "products.sku")}
_SORT_COLUMNS: dict[str, InstrumentedAttribute[Any]] = {
    "id": Product.id,
    "name": Product.name,
    "price": Product.price,
    "created_at": Product.created_at,
}


@dataclass(frozen=True)
class ProductSlice:
    items: Sequence[Product]
    total: int
    next_cursor: Cursor | None


class ProductRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, product_id: int) -> Product | None:
        return await self._session.get(Product, product_id)

    async def get_for_update(self, product_id: int) -> Product | None:
        """The product, its row locked until the transaction ends.

        Changes read, check and write under this lock, so concurrent updates
        apply one after the other and each sees the version the previous
        one left (SQLite, which has no row locks, serialises whole
        transactions instead).
        """
        statement = (
            select(Product)
            .where(Product.id == product_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return (await self._session.scalars(statement)).first()

    async def list(self, query: ProductQuery, exact_total_limit: int) -> ProductSlice:
        """One page of the list, its total, and the cursor of the page after it.

        Every sort order reads an index in order, (field, id) or the primary
        key, and stops after the page: a descending sort scans it backwards,
        PostgreSQL sorting only the ties by id (an incremental sort). The
        ids are picked first and only the page's rows then read whole, so a
        deep `offset` skips index entries rather than rows; a `cursor` skips
        nothing, resuming in the index where the previous page ended.
        """
        filters = _filters(query)
        field = query.sort.removeprefix("-")
        descending = query.sort.startswith("-")
        column = _SORT_COLUMNS[field]
        order = [column.desc() if descending else column.asc()]
        if field != "id":
            order.append(Product.id.asc())
        position = query.position
        after = [] if position is None else [_after(position, column, descending)]
        # One row more than the page: whether it exists says if a next page does.
        page = (
            select(Product.id)
            .where(*filters, *after)
            .order_by(*order)
            .limit(query.limit + 1)
            .offset(query.offset)
            .subquery("page")
        )
        rows = await self._session.scalars(
            select(Product).join(page, Product.id == page.c.id).order_by(*order)
        )
        found = rows.all()
        items, more = found[: query.limit], len(found) > query.limit
        next_cursor = Cursor.after(items[-1], query.sort) if more else None
        total = await self._total(query, filters, len(items), more, exact_total_limit)
        return ProductSlice(items, total, next_cursor)

    async def _total(
        self,
        query: ProductQuery,
        filters: Filters,
        shown: int,
        more: bool,
        limit: int,
    ) -> int:
        """How many products match: exact up to `limit`, PostgreSQL's estimate above it.

        count(*) reads every matching row: about 100 ms per million, on every
        page. So, measured on a million products (bench/scale.py):

        - the last page of an offset walk knows its total without counting;
        - else PostgreSQL's planner estimates the matches (an EXPLAIN: no
          rows read). Above `limit` the estimate is the answer: proving
          there are more than 10,000 matches would mean reading 10,000 of
          them, 30 to 60 ms for a search;
        - else the matches are counted, but at most limit + 1 of them, so a
          planner that expected few and meets many costs no more than that;
          more than `limit` found, the estimate (at least limit + 1) stands.

        A counter table kept by triggers would be exact for the whole list
        only, not for a filtered one, and would make concurrent creates and
        deletes queue on its one row. SQLite has no estimates: it counts.
        """
        by_offset = query.cursor is None
        if by_offset and not more and (shown or not query.offset):
            return query.offset + shown
        # What this page proves at least: the rows before it, its own, and one after.
        seen = (query.offset if by_offset else 0) + shown + (1 if more else 0)
        # And at most: an empty page past the end has no more than `offset` before it.
        ceiling = query.offset if by_offset and not shown else None
        if self._session.get_bind().dialect.name != "postgresql":
            return await self._count(filters)
        estimate = await self._estimate(filters)
        if estimate > limit:
            total = max(estimate, seen)
        else:
            counted = await self._count(filters, cap=limit + 1)
            total = counted if counted <= limit else max(estimate, counted, seen)
        return total if ceiling is None else min(total, ceiling)

    async def _count(self, filters: Filters, cap: int | None = None) -> int:
        matches: Select[Any] = select(literal(1)).select_from(Product).where(*filters)
        if cap is not None:
            matches = matches.limit(cap)
        counted = await self._session.scalar(select(func.count()).select_from(matches.subquery()))
        return counted or 0

    async def _estimate(self, filters: Filters) -> int:
        """The planner's estimate of the rows matching `filters` (PostgreSQL)."""
        statement: Select[Any] = select(literal_column("1")).select_from(Product).where(*filters)
        connection = await self._session.connection()
        compiled = statement.compile(dialect=connection.dialect)
        parameters = compiled.construct_params()
        result = await connection.exec_driver_sql(
            f"EXPLAIN (FORMAT JSON) {compiled}",
            tuple(parameters[name] for name in compiled.positiontup or ()),
        )
        plan = result.scalar_one()
        if isinstance(plan, str):
            plan = json.loads(plan)
        return int(plan[0]["Plan"]["Plan Rows"])

    async def add(self, product: Product) -> Product:
        self._session.add(product)
        await flush_unique(self._session, _UNIQUE_KEYS)
        return product

    async def update(self, product: Product, changes: dict[str, Any]) -> Product:
        for field, value in changes.items():
            setattr(product, field, value)
        product.version += 1
        product.updated_at = utc_now()
        await flush_unique(self._session, _UNIQUE_KEYS)
        return product

    async def delete(self, product: Product) -> None:
        await self._session.delete(product)
        await self._session.flush()

    async def lock_owned_by(self, owner_id: int) -> Sequence[tuple[int, int, int]]:
        """(id, owner_id, version) of the owner's products, locked: about to be deleted."""
        statement = (
            select(Product.id, Product.owner_id, Product.version)
            .where(Product.owner_id == owner_id)
            .order_by(Product.id)
            .with_for_update()
        )
        return [
            (row.id, row.owner_id, row.version) for row in await self._session.execute(statement)
        ]


def _after(position: Cursor, column: InstrumentedAttribute[Any], descending: bool) -> Any:
    """The rows that sort after the cursor's product, in a form an index can seek to."""
    if position.field == "id":
        return Product.id < position.id if descending else Product.id > position.id
    value = literal(position.value, column.type)
    if not descending:
        # A row comparison: one seek into the (field, id) index.
        return tuple_(column, Product.id) > tuple_(value, literal(position.id, Product.id.type))
    # Descending by field, ascending by id: no row comparison says that, so
    # the index range (field <= value) does the seeking and the rest filters.
    return and_(column <= value, or_(column < value, Product.id > position.id))


def _like_pattern(text: str) -> str:
    """`%text%` for LIKE ... ESCAPE '/', wildcards in the text matching only themselves."""
    escaped = text.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return f"%{escaped}%"


def _filters(query: ProductQuery) -> list[ColumnElement[bool]]:
    filters: Filters = []
    if query.q:
        # search_text is name and description lower-cased by the database;
        # the database lower-cases q the same way, so this is ILIKE on
        # either field, and a pg_trgm index serves it on PostgreSQL.
        pattern = func.lower(literal(_like_pattern(query.q)))
        filters.append(Product.search_text.like(pattern, escape="/"))
    if query.min_price is not None:
        filters.append(Product.price >= query.min_price)
    if query.max_price is not None:
        filters.append(Product.price <= query.max_price)
    if query.owner_id is not None:
        filters.append(Product.owner_id == query.owner_id)
    return filters
