"""The read replica (DATABASE_READ_URL): its health, watched off the request path.

A background task in each worker asks the replica, at most once a second,
how far behind the primary it is. Reads go to it only while it answers and
lags at most READ_REPLICA_MAX_LAG_SECONDS; otherwise, and whenever a read
fails there, the primary serves them. Nothing fails because a replica did.
"""

import asyncio
import logging
from typing import Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.notifications import first_of

logger = logging.getLogger("app.replica")

ReplicaState = Literal["ok", "lagging", "down"]
CHECK_INTERVAL_SECONDS = 1.0
CHECK_TIMEOUT_SECONDS = 2.0

# Measured on the replica: 0 while it has replayed all it received (an idle
# primary sends nothing, so its last replay may be old), else the age of
# the last transaction replayed. NULL (not a standby, nothing replayed yet): 0.
_LAG_QUERY = text(
    "SELECT COALESCE(CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
    "ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END, 0)"
)


class ReadReplica:
    def __init__(self, engine: AsyncEngine, max_lag_seconds: float) -> None:
        self.engine = engine
        # Reads run outside transactions, as on the primary (Database.reads).
        self.reads = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.max_lag_seconds = max_lag_seconds
        # Down until the first check says otherwise: reads start on the primary.
        self.state: ReplicaState = "down"

    @property
    def usable(self) -> bool:
        return self.state == "ok"

    def failed(self, error: BaseException) -> None:
        """A read failed on the replica: the primary serves reads until a check passes."""
        self._set("down", f"{type(error).__module__}.{type(error).__qualname__}")

    async def check(self) -> ReplicaState:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS), self.engine.connect() as connection:
                if self.engine.dialect.name == "postgresql":
                    lag = float(await connection.scalar(_LAG_QUERY) or 0)
                else:
                    lag = 0.0
                    await connection.execute(text("SELECT 1"))
        except Exception as error:  # unreachable, timed out, refused: all mean down
            self.failed(error)
        else:
            if lag > self.max_lag_seconds:
                self._set("lagging", f"{lag:.1f} s behind")
            else:
                self._set("ok", f"{lag:.1f} s behind")
        return self.state

    async def run(self, stop: asyncio.Event) -> None:
        """Checks every CHECK_INTERVAL_SECONDS until `stop` is set."""
        while not stop.is_set():
            await self.check()
            await first_of(stop, seconds=CHECK_INTERVAL_SECONDS)

    def _set(self, state: ReplicaState, reason: str) -> None:
        if state != self.state:
            log = logger.info if state == "ok" else logger.warning
            log(
                "read replica %s (%s): reads go to the %s",
                state,
                reason,
                "replica" if state == "ok" else "primary",
            )
        self.state = state
