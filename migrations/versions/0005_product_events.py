"""The log of product events (live events, API 1.1).

product_events: every product change, written in the transaction of the
change; `position` is given when the relay publishes it (see
app/events/models.py).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "product_events",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("product_id", sa.BigInteger(), nullable=False),
        sa.Column("owner_id", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("published_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_product_events"),
        sa.CheckConstraint(
            "kind IN ('product.created', 'product.updated', 'product.deleted')",
            name="ck_product_events_event_kind",
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("uq_product_events_position", "product_events", ["position"], unique=True)
    op.create_index(
        "ix_product_events_pending",
        "product_events",
        ["id"],
        postgresql_where=sa.text("position IS NULL"),
        sqlite_where=sa.text("position IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("product_events")
