"""Account lifecycle and the mail outbox.

- users.email_verified: false for every existing user, except the first
  admin (the user whose email is FIRST_ADMIN_EMAIL, when `migrate` passes it).
- account_tokens: one-time tokens of email verification and password reset,
  stored as keyed hashes.
- mail_outbox: every message to send, written in the transaction of the
  change that causes it, with its delivery state.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# BIGINT on PostgreSQL; SQLite only auto-increments a column declared INTEGER.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    # A plain ALTER on both backends: SQLite adds a column with a default in
    # place, so users (and its lower() indexes) is not rebuilt.
    op.add_column(
        "users",
        sa.Column("email_verified", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    first_admin_email = context.config.attributes.get("first_admin_email")
    if first_admin_email:
        op.execute(
            sa.text(
                "UPDATE users SET email_verified = :yes "
                "WHERE lower(email) = lower(:email) AND role = 'admin'"
            ).bindparams(yes=True, email=first_admin_email)
        )

    op.create_table(
        "account_tokens",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("user_id", BIG_ID, nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("message_id", BIG_ID, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.Column("used_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_account_tokens"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_account_tokens_user_id_users", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("token_hash", name="uq_account_tokens_token_hash"),
        sa.CheckConstraint(
            "purpose IN ('verify_email', 'password_reset')", name="ck_account_tokens_token_purpose"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_account_tokens_user_id", "account_tokens", ["user_id"])

    op.create_table(
        "mail_outbox",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("user_id", BIG_ID, nullable=True),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("token_version", sa.Integer(), nullable=True),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TIMESTAMP, nullable=False),
        sa.Column("claim", sa.String(32), nullable=True),
        sa.Column("last_error", sa.String(200), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("sent_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_mail_outbox"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_mail_outbox_user_id_users", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("message_id", name="uq_mail_outbox_message_id"),
        sa.CheckConstraint(
            "kind IN ('welcome', 'verify_email', 'password_reset')",
            name="ck_mail_outbox_message_kind",
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'sent', 'failed', 'skipped')",
            name="ck_mail_outbox_message_status",
        ),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_mail_outbox_status_next_attempt_at", "mail_outbox", ["status", "next_attempt_at"]
    )
    op.create_index(
        "ix_mail_outbox_kind_address_created_at",
        "mail_outbox",
        ["kind", "address", "created_at"],
    )
    op.create_index("ix_mail_outbox_user_id", "mail_outbox", ["user_id"])


def downgrade() -> None:
    op.drop_table("mail_outbox")
    op.drop_table("account_tokens")
    # SQLite 3.35+ drops a column in place too; a batch rebuild would lose
    # the lower() indexes, which SQLite cannot reflect.
    op.execute("ALTER TABLE users DROP COLUMN email_verified")
