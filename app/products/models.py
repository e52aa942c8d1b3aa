from decimal import Decimal

from sqlalchemy import Computed, ForeignKey, Index, Numeric, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.models import Base, BigIntId, TimestampMixin

Amount = Numeric(12, 2)

# What `q` searches: name and description, lower-cased once when the row is
# written rather than on every row of every search (lower() is most of the
# cost of ILIKE). A tab joins them: `q` cannot hold one, so a match never
# spans the two, and `q` matching this is `q` matching either field. The
# literal holds a real tab, which PostgreSQL and SQLite both read inside
# quotes (and SQLite's reflection, unlike a line feed, reads back: a later
# batch migration of this table keeps the expression).
SEARCH_TEXT = "lower(name || '\t' || coalesce(description, ''))"


class Product(TimestampMixin, Base):
    __tablename__ = "products"
    __table_args__ = (
        Index("uq_products_sku", "sku", unique=True),
        # The list's sort orders, each with the id tiebreak; a descending
        # sort scans them backwards (ties then sorted by id, a few rows).
        Index("ix_products_name_id", "name", "id"),
        Index("ix_products_price_id", "price", "id"),
        Index("ix_products_created_at_id", "created_at", "id"),
        # On PostgreSQL a trigram index, which serves `LIKE '%q%'` for a q of
        # three characters or more; SQLite ignores the options and gets a
        # plain index.
        Index(
            "ix_products_search_text",
            "search_text",
            postgresql_using="gin",
            postgresql_ops={"search_text": "gin_trgm_ops"},
        ),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(String(5000))
    price: Mapped[Decimal] = mapped_column(Amount)
    tax: Mapped[Decimal | None] = mapped_column(Amount)
    sku: Mapped[str | None] = mapped_column(String(64))
    owner_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(default=1)
    # Never loaded with the product: only searched.
    search_text: Mapped[str] = mapped_column(
        Text, Computed(SEARCH_TEXT, persisted=True), deferred=True
    )
