from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Index, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.models import Base, BigIntId, string_enum, utc_now


class EventKind(StrEnum):
    CREATED = "product.created"
    UPDATED = "product.updated"
    DELETED = "product.deleted"


class ProductEvent(Base):
    """One product change, written in the transaction of the change.

    `id` comes from a sequence when the row is written, and so is not in
    commit order: a transaction holding id 5 may commit after the one that
    took id 6. `position` is the event's public id. It is null until the
    relay (app/events/hub.py) publishes the row, one relay at a time,
    numbering what has committed since its last pass: the positions are
    gap-free and grow in the order the changes became visible, so a client
    that resumes after position N misses nothing.
    """

    __tablename__ = "product_events"
    __table_args__ = (
        Index("uq_product_events_position", "position", unique=True),
        # The relay's work: rows not yet published, in the order written.
        Index(
            "ix_product_events_pending",
            "id",
            postgresql_where=text("position IS NULL"),
            sqlite_where=text("position IS NULL"),
        ),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    position: Mapped[int | None] = mapped_column(BigInteger)
    kind: Mapped[EventKind] = mapped_column(string_enum(EventKind, "event_kind"))
    product_id: Mapped[int] = mapped_column(BigInteger)
    owner_id: Mapped[int] = mapped_column(BigInteger)
    version: Mapped[int]
    # The event's data, as sent: {"id", "version", "product"} in JSON, the
    # product as GET returned it at this version (null once deleted).
    data: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    published_at: Mapped[datetime | None]
