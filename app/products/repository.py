import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    CTE,
    BigInteger,
    ColumnElement,
    Integer,
    Row,
    ScalarSelect,
    Select,
    String,
    Subquery,
    and_,
    bindparam,
    case,
    column,
    false,
    func,
    literal_column,
    or_,
    select,
    text,
    true,
    tuple_,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.compiler import SQLCompiler

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


# What a product read returns: every column but the search text.
PRODUCT_COLUMNS = tuple(c for c in Product.__table__.c if c.key != "search_text")
_BY_ID = select(*PRODUCT_COLUMNS).where(Product.id == bindparam("product_id"))
# PostgreSQL's estimate of the table's rows, as its planner makes it: the
# rows per page ANALYZE last saw times the pages the table has now. NULL
# while the table was never analyzed (or is empty): then the rows are counted.
_TABLE_ESTIMATE = text(
    "SELECT CASE WHEN c.reltuples < 0 OR c.relpages = 0 THEN NULL ELSE"
    " (c.reltuples / c.relpages * (pg_relation_size(c.oid)"
    " / current_setting('block_size')::float8))::bigint END"
    " FROM pg_class c WHERE c.oid = 'products'::regclass"
).columns(column("estimate", BigInteger))


# A row of PRODUCT_COLUMNS (with attribute access: row.id, row.version).
ProductRow = Row[*tuple[Any, ...]]


@dataclass(frozen=True)
class ProductSlice:
    items: Sequence[ProductRow]
    total: int
    next_cursor: Cursor | None


class ProductReader:
    """Product reads in SQLAlchemy Core on a connection outside any transaction
    (Database.read): one statement per read where the list's total allows,
    rows handed on as they come, no ORM objects made.

    The ORM's unit of work is for changes (ProductRepository); a read needs
    none of it, and it cost about three quarters of a read's CPU (README,
    "What the profile showed").
    """

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def get(self, product_id: int) -> ProductRow | None:
        return (await self._connection.execute(_BY_ID, {"product_id": product_id})).first()

    async def list(self, query: ProductQuery, exact_total_limit: int) -> ProductSlice:
        """One page of the list, its total, and the cursor of the page after it.

        Every sort order reads an index in order, (field, id) or the primary
        key, and stops after the page: a descending sort scans it backwards,
        PostgreSQL sorting only the ties by id (an incremental sort). The
        ids are picked first and only the page's rows then read whole, so a
        deep `offset` skips index entries rather than rows; a `cursor` skips
        nothing, resuming in the index where the previous page ended.

        The list without filters (the one most asked for) is one statement
        on PostgreSQL, its total included (see _ListStatements.totals); a
        filtered one may need two more for its total (see _total).
        """
        postgresql = self._connection.dialect.name == "postgresql"
        statements = _list_statements(_Shape.of(query, postgresql))
        values = _values(query, exact_total_limit)
        result = (await self._connection.execute(statements.page, values)).all()
        found = [r for r in result if r.id is not None]
        items, more = found[: query.limit], len(found) > query.limit
        next_cursor = Cursor.after(items[-1], query.sort) if more else None
        if statements.totals:
            counted, estimated = result[0].counted, result[0].estimated
            total = _settle_total(query, len(items), more, exact_total_limit, counted, estimated)
        else:
            total = await self._total(statements, values, query, len(items), more)
        return ProductSlice(items, total, next_cursor)

    async def _total(
        self,
        statements: "_ListStatements",
        values: dict[str, Any],
        query: ProductQuery,
        shown: int,
        more: bool,
    ) -> int:
        """How many products match a filtered list: exact up to `limit`,
        PostgreSQL's estimate above it.

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
        if _known_from_page(query, shown, more):
            return query.offset + shown
        limit = values["exact_limit"]
        if self._connection.dialect.name != "postgresql":
            return int(await self._connection.scalar(statements.count, values) or 0)
        estimate = await self._estimate(statements, values)
        counted = None
        if estimate <= limit:
            counted = int(await self._connection.scalar(statements.capped_count, values) or 0)
        return _settle_total(query, shown, more, limit, counted, estimate)

    async def _estimate(self, statements: "_ListStatements", values: dict[str, Any]) -> int:
        """The planner's estimate of the rows matching the filters (PostgreSQL)."""
        compiled = statements.matches_compiled(self._connection.dialect)
        parameters = compiled.construct_params(values)
        result = await self._connection.exec_driver_sql(
            f"EXPLAIN (FORMAT JSON) {compiled}",
            tuple(parameters[name] for name in compiled.positiontup or ()),
        )
        plan = result.scalar_one()
        if isinstance(plan, str):
            plan = json.loads(plan)
        return int(plan[0]["Plan"]["Plan Rows"])


@dataclass(frozen=True)
class _Shape:
    """What a list's statements depend on besides values: made once per shape."""

    sort: str
    q: bool
    short_q: bool  # a q with no trigram in it (fewer than 3 characters)
    min_price: bool
    max_price: bool
    owner_id: bool
    cursor: bool
    offset: bool
    postgresql: bool

    @classmethod
    def of(cls, query: ProductQuery, postgresql: bool) -> "_Shape":
        return cls(
            sort=query.sort,
            q=bool(query.q),
            short_q=0 < len(query.q or "") < TRIGRAM,
            min_price=query.min_price is not None,
            max_price=query.max_price is not None,
            owner_id=query.owner_id is not None,
            cursor=query.position is not None,
            offset=bool(query.offset),
            postgresql=postgresql,
        )


def _values(query: ProductQuery, exact_total_limit: int) -> dict[str, Any]:
    """The values the statements of the query's shape bind, by name."""
    values: dict[str, Any] = {
        "page_rows": query.limit + 1,  # one more: whether it comes says if a next page does
        "page_offset": query.offset,
        "limit": query.limit,
        "exact_limit": exact_total_limit,
        "cap": exact_total_limit + 1,
    }
    if query.q:
        values["pattern"] = _like_pattern(query.q)
    for name in ("min_price", "max_price", "owner_id"):
        if getattr(query, name) is not None:
            values[name] = getattr(query, name)
    if (position := query.position) is not None:
        values["after_id"] = position.id
        values["after_value"] = position.value
    return values


class _ListStatements:
    """A list shape's statements, built once and reused: SQLAlchemy then finds
    each compiled form by the statement's memoized cache key instead of
    rebuilding the statement and its key on every request (what the profile
    showed: more than a third of a list's CPU)."""

    def __init__(self, shape: _Shape) -> None:
        filters = _filters(shape)
        field = shape.sort.removeprefix("-")
        descending = shape.sort.startswith("-")
        column = _SORT_COLUMNS[field]
        after = [_after(field, column, descending)] if shape.cursor else []
        ids = (
            select(Product.id)
            .where(*filters, *after)
            .order_by(*_order(column, field, descending))
            .limit(bindparam("page_rows", type_=Integer))
            .offset(bindparam("page_offset", type_=Integer))
            .cte("page_ids")
        )
        rows = select(*PRODUCT_COLUMNS).join(ids, Product.id == ids.c.id).subquery("page_rows")
        order = _order(rows.c[field], field, descending, rows.c.id)
        self.matches: Select[Any] = select(literal_column("1")).select_from(Product).where(*filters)
        self.count = select(func.count()).select_from(self.matches.subquery("matches"))
        capped = self.matches.limit(bindparam("cap", type_=Integer)).subquery("matches")
        self.capped_count = select(func.count()).select_from(capped)
        self._compiled: dict[str, SQLCompiler] = {}
        # The whole list on PostgreSQL: its total in the same statement.
        self.totals = not filters and shape.postgresql
        if self.totals:
            totals = _total_columns(shape, ids, self.capped_count.scalar_subquery())
            self.page = (
                select(totals.c.counted, totals.c.estimated, rows)
                .select_from(totals.outerjoin(rows, true()))
                .order_by(*order)
            )
        else:
            self.page = select(rows).order_by(*order)

    def matches_compiled(self, dialect: Dialect) -> SQLCompiler:
        """The matches' SELECT compiled for `dialect`, for the EXPLAIN of the estimate."""
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            compiled = self.matches.compile(dialect=dialect)
            self._compiled[dialect.name] = compiled
        return compiled


@lru_cache(maxsize=2048)  # every shape there is: 8 sorts x 3 kinds of q x 2^6
def _list_statements(shape: _Shape) -> _ListStatements:
    return _ListStatements(shape)


def _total_columns(shape: _Shape, ids: CTE, count: ScalarSelect[Any]) -> Subquery:
    """The total's parts, in the page's own statement: one row, whatever the page holds.

    `estimated` is the table's estimate when the page does not tell the total
    by itself; `counted` is `count` (the capped count), only made when that estimate is
    at most the limit (or unknown). PostgreSQL evaluates a subquery in a CASE
    branch only when the branch is taken, so a page that knows its total, or
    a table estimated above the limit, counts nothing.
    """
    shown = select(func.count()).select_from(ids).scalar_subquery()
    # The page tells the total itself: the last page of an offset walk
    # (as _known_from_page says, in SQL).
    known: ColumnElement[bool] = false()
    if not shape.cursor:
        known = shown <= bindparam("limit")
        if shape.offset:
            known = and_(known, shown > literal_column("0"))
    estimate = _TABLE_ESTIMATE.scalar_subquery()
    return select(
        case((known, None), else_=estimate).label("estimated"),
        case(
            (known, None),
            (func.coalesce(estimate, literal_column("0")) <= bindparam("exact_limit"), count),
            else_=None,
        ).label("counted"),
    ).subquery("totals")


def _known_from_page(query: ProductQuery, shown: int, more: bool) -> bool:
    """The last page of an offset walk tells the total: the rows before it and its own."""
    return query.cursor is None and not more and bool(shown or not query.offset)


def _settle_total(
    query: ProductQuery,
    shown: int,
    more: bool,
    limit: int,
    counted: int | None,
    estimate: int | None,
) -> int:
    """The total from what was counted (at most limit + 1) and estimated."""
    if _known_from_page(query, shown, more):
        return query.offset + shown
    by_offset = query.cursor is None
    # What this page proves at least: the rows before it, its own, and one after.
    seen = (query.offset if by_offset else 0) + shown + (1 if more else 0)
    # And at most: an empty page past the end has no more than `offset` before it.
    ceiling = query.offset if by_offset and not shown else None
    if counted is not None and counted <= limit:
        total = counted
    else:
        total = max(estimate or 0, counted or 0, seen)
    return total if ceiling is None else min(total, ceiling)


def _order(
    column: Any, field: str, descending: bool, tiebreak: Any = Product.id
) -> list[ColumnElement[Any]]:
    order = [column.desc() if descending else column.asc()]
    if field != "id":
        order.append(tiebreak.asc())
    return order


class ProductRepository:
    """Product changes, through the request's unit of work (the ORM session)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

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


def _after(field: str, column: InstrumentedAttribute[Any], descending: bool) -> Any:
    """The rows that sort after the cursor's product (`after_value`, `after_id`),
    in a form an index can seek to."""
    after_id = bindparam("after_id", type_=Product.id.type)
    if field == "id":
        return Product.id < after_id if descending else Product.id > after_id
    value = bindparam("after_value", type_=column.type)
    if not descending:
        # A row comparison: one seek into the (field, id) index.
        return tuple_(column, Product.id) > tuple_(value, after_id)
    # Descending by field, ascending by id: no row comparison says that, so
    # the index range (field <= value) does the seeking and the rest filters.
    return and_(column <= value, or_(column < value, Product.id > after_id))


TRIGRAM = 3  # pg_trgm's unit: a LIKE pattern with fewer characters has none


def _like_pattern(text: str) -> str:
    """`%text%` for LIKE ... ESCAPE '/', wildcards in the text matching only themselves."""
    escaped = text.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return f"%{escaped}%"


def _filters(shape: _Shape) -> Filters:
    """The shape's filters, their values bound by name (see _values)."""
    filters: Filters = []
    if shape.q:
        # search_text is name and description lower-cased by the database;
        # the database lower-cases q the same way, so this is ILIKE on
        # either field, and a pg_trgm index serves it on PostgreSQL.
        pattern = func.lower(bindparam("pattern", type_=String))
        searched: Any = Product.search_text
        if shape.short_q and shape.postgresql:
            # Without a trigram the index can only be read whole and every
            # row checked again. A custom plan knows to scan the table
            # instead, but after five executions PostgreSQL may keep a
            # generic plan, made without the pattern: at a million rows it
            # read the whole index for a rare two-letter word, 4.8 s instead
            # of 0.3. `search_text || ''` is not what the index holds, so no
            # plan of a short q's statements can choose it.
            searched = Product.search_text.op("||")(literal_column("''"))
        filters.append(searched.like(pattern, escape="/"))
    if shape.min_price:
        filters.append(Product.price >= bindparam("min_price", type_=Product.price.type))
    if shape.max_price:
        filters.append(Product.price <= bindparam("max_price", type_=Product.price.type))
    if shape.owner_id:
        filters.append(Product.owner_id == bindparam("owner_id", type_=Product.owner_id.type))
    return filters
