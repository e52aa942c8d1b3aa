"""The product list at scale: indexes for its sort orders and a searchable text column.

- (name, id), (price, id), (created_at, id): each sort order of the list,
  with its id tiebreak, read from an index (also for a price range).
- products.search_text: lower(name, tab, description), generated and
  stored by the database; `q` is a plain LIKE on it.
- On PostgreSQL a pg_trgm GIN index on search_text serves `q` (three
  characters or more); SQLite gets a plain index of the same name.

Adding the stored column rewrites the products table on PostgreSQL (and
rebuilds it on SQLite): on a large table, run it in a quiet moment.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in app/products/models.py: a real tab inside the quotes.
SEARCH_TEXT = "lower(name || '\t' || coalesce(description, ''))"
_SQLITE_TABLE = {"sqlite_autoincrement": True}


@contextmanager
def _quiet_reflection() -> Iterator[None]:
    """Batch mode reflects users too (for the foreign key), and SQLite cannot
    reflect its lower() indexes; users is not rebuilt, so the warning is noise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based")
        yield


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    # SQLite cannot add a stored generated column: batch mode rebuilds the
    # table, which must keep AUTOINCREMENT (ids are never reused).
    with _quiet_reflection(), op.batch_alter_table("products", table_kwargs=_SQLITE_TABLE) as b:
        b.add_column(
            sa.Column(
                "search_text",
                sa.Text(),
                sa.Computed(SEARCH_TEXT, persisted=True),
                nullable=False,
            )
        )
    op.create_index("ix_products_name_id", "products", ["name", "id"])
    op.create_index("ix_products_price_id", "products", ["price", "id"])
    op.create_index("ix_products_created_at_id", "products", ["created_at", "id"])
    op.create_index(
        "ix_products_search_text",
        "products",
        ["search_text"],
        postgresql_using="gin",
        postgresql_ops={"search_text": "gin_trgm_ops"},
    )


def downgrade() -> None:
    op.drop_index("ix_products_search_text", table_name="products")
    op.drop_index("ix_products_created_at_id", table_name="products")
    op.drop_index("ix_products_price_id", table_name="products")
    op.drop_index("ix_products_name_id", table_name="products")
    with _quiet_reflection(), op.batch_alter_table("products", table_kwargs=_SQLITE_TABLE) as b:
        b.drop_column("search_text")
    # pg_trgm stays: other databases objects may use it, and it holds no data.
