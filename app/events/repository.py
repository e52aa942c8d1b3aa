"""The event log: written with each product change, published by the relay, read by streams."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Row, delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.database import lock_name
from app.events.models import EventKind, ProductEvent
from app.products.models import Product
from app.products.schemas import ProductRead

# Set in a session's info when it wrote an event: after its commit, this
# process's relay publishes at once instead of at its next sweep.
WRITTEN = "product_events_written"
# NOTIFY'd by the relay in the transaction that publishes, so every worker
# of every server hears of new events when they become visible.
PUBLISHED_CHANNEL = "product_events"
RELAY_LOCK = "product_events.relay"

# One statement numbers every committed, unpublished event after the
# highest position so far, in the order written. Only one relay runs it at
# a time (RELAY_LOCK; on SQLite the write lock), so positions never repeat
# or leave a gap. The same text works on PostgreSQL and SQLite (3.33+).
_PUBLISH = text(
    """
    WITH pending AS (
        SELECT id, row_number() OVER (ORDER BY id) AS n
        FROM product_events WHERE position IS NULL ORDER BY id LIMIT :limit
    ), newest AS (
        SELECT coalesce(max(position), 0) AS position FROM product_events
    )
    UPDATE product_events
    SET position = newest.position + pending.n, published_at = :now
    FROM pending, newest
    WHERE product_events.id = pending.id
    RETURNING product_events.position
    """
)


@dataclass(frozen=True, slots=True)
class Bounds:
    """The oldest and newest positions kept; (None, None) while nothing is published."""

    oldest: int | None
    newest: int | None


class EventLog:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    def product_changed(self, kind: EventKind, product: Product) -> None:
        """Adds the event of a create or change; the product is as the change left it."""
        body = ProductRead.model_validate(product).model_dump_json()
        self._add(kind, product.id, product.owner_id, product.version, body)

    def products_deleted(self, products: Iterable[Sequence[int]]) -> None:
        """Adds a product.deleted event for each (id, owner_id, version)."""
        for product_id, owner_id, version in products:
            self._add(EventKind.DELETED, product_id, owner_id, version, "null")

    def _add(
        self, kind: EventKind, product_id: int, owner_id: int, version: int, body: str
    ) -> None:
        data = f'{{"id":{product_id},"version":{version},"product":{body}}}'
        self._session.add(
            ProductEvent(
                kind=kind, product_id=product_id, owner_id=owner_id, version=version, data=data
            )
        )
        self._session.info[WRITTEN] = True

    async def publish(self, now: datetime, limit: int = 1000) -> int:
        """Numbers up to `limit` committed events; how many. Call in a transaction of its own."""
        await lock_name(self._session, RELAY_LOCK)
        # RETURNING to count: Python's sqlite3 reports no rowcount for WITH ... UPDATE.
        result = await self._session.execute(_PUBLISH, {"limit": limit, "now": now})
        published = len(result.all())
        if published and self._session.get_bind().dialect.name == "postgresql":
            # Delivered when this transaction commits, and only if it does.
            await self._session.execute(select(func.pg_notify(PUBLISHED_CHANNEL, "")))
        return published

    async def bounds(self) -> Bounds:
        oldest, newest = (
            await self._session.execute(
                select(func.min(ProductEvent.position), func.max(ProductEvent.position))
            )
        ).one()
        return Bounds(oldest, newest)

    async def after(
        self,
        position: int,
        *,
        limit: int,
        until: int | None = None,
        owner_id: int | None = None,
    ) -> Sequence[Row[tuple[int, EventKind, int, str, datetime]]]:
        """Published events after `position` (up to `until`), in order."""
        statement = (
            select(
                ProductEvent.position,
                ProductEvent.kind,
                ProductEvent.owner_id,
                ProductEvent.data,
                ProductEvent.created_at,
            )
            .where(ProductEvent.position > position)
            .order_by(ProductEvent.position)
            .limit(limit)
        )
        if until is not None:
            statement = statement.where(ProductEvent.position <= until)
        if owner_id is not None:
            statement = statement.where(ProductEvent.owner_id == owner_id)
        return (await self._session.execute(statement)).all()  # type: ignore[return-value]

    async def purge(self, published_before: datetime) -> int:
        """Deletes events published before the time, keeping the newest (the count goes on)."""
        newest = select(func.max(ProductEvent.position)).scalar_subquery()
        result = await self._session.execute(
            delete(ProductEvent).where(
                ProductEvent.published_at < published_before, ProductEvent.position < newest
            )
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
