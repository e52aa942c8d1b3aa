"""JIT off for the database, instead of at each connection's start-up.

Short OLTP queries pay for JIT compilation more than it saves. The service
used to send `jit=off` as a startup parameter, which PgBouncer refuses
("unsupported startup parameter: jit"); a database-level setting reaches
every session however it connects. Only the database's owner (or a
superuser) may set it: otherwise the migration says so and goes on.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SET = """
DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET jit = {value}', current_database());
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'jit left as it is: only the database owner may change it for the database';
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_SET.format(value="off"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_SET.format(value="DEFAULT"))
