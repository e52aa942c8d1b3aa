"""Engine, sessions and the per-request unit of work."""

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from sqlalchemy import event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.core import metrics
from app.core.config import Settings
from app.core.exceptions import DomainError
from app.core.replica import ReadReplica

T = TypeVar("T")
AUTOCOMMIT = "AUTOCOMMIT"


def create_engine(settings: Settings, url_text: str | None = None) -> AsyncEngine:
    """The primary's engine, or with `url_text` another database's (the read replica's)."""
    url = make_url(url_text or settings.sqlalchemy_url)
    # Parameters never appear in exception messages or logs: they hold hashes.
    options: dict[str, Any] = {"hide_parameters": True}
    pool_size, max_overflow = settings.pool_limits
    options |= {
        "pool_size": pool_size,
        "max_overflow": max_overflow,
        "pool_timeout": settings.db_pool_timeout,
    }
    if url.get_backend_name() == "sqlite":
        return _create_sqlite_engine(url.render_as_string(hide_password=False), options)
    engine = create_async_engine(
        url,
        **options,
        pool_recycle=1800,
        connect_args={
            "timeout": settings.db_connect_timeout,
            "command_timeout": settings.db_command_timeout,
            # 0 makes every statement unnamed and used at once, which is
            # what a transaction-mode pooler can carry. Both caches: SQLAlchemy
            # reusing a statement asyncpg no longer keeps would run another
            # query's plan.
            "statement_cache_size": settings.db_statement_cache_size,
            "prepared_statement_cache_size": settings.db_statement_cache_size,
            # Only what PgBouncer accepts at start-up. JIT (which costs short
            # queries more than it saves) is off for the database instead:
            # migration 0006.
            "server_settings": {"application_name": "storefront-api"},
        },
    )
    event.listen(engine.sync_engine, "checkout", _discard_closed_connection)
    return engine


def _discard_closed_connection(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Never hand out a connection the server has closed (a restart, a failover).

    asyncpg notices a closed socket by itself, so this costs no round trip,
    where `pool_pre_ping` sends three (BEGIN, a ping, ROLLBACK) on every
    checkout: a fifth of a product read's time. The pool replaces the
    connection and tries again. A connection lost without a word fails its
    first statement instead (a 503), and SQLAlchemy then renews every
    connection the pool held.
    """
    if dbapi_connection._connection.is_closed():
        raise DisconnectionError("the server closed this connection")


def _create_sqlite_engine(url: str, options: dict[str, Any]) -> AsyncEngine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, **options, connect_args={"timeout": 15})

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver so that "begin" below
        # decides how each transaction starts.
        dbapi_connection.isolation_level = None
        prepare_sqlite_connection(dbapi_connection)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA busy_timeout = 15000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # SQLite has no row locks. Taking the write lock when a transaction
        # starts serialises writers up front (waiting on busy_timeout) instead
        # of failing with "database is locked" when a reader tries to write.
        # Reads (Database.reads: autocommit) take no lock and start nothing.
        if connection.get_execution_options().get("isolation_level") != AUTOCOMMIT:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _unicode_lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def prepare_sqlite_connection(dbapi_connection: Any) -> None:
    """What every SQLite connection needs, the application's and the migrations' alike.

    SQLite's own lower() folds ASCII only; the unique indexes on
    lower(username) and lower(email), and every lookup through them, must
    fold "É" to "é" as PostgreSQL does. The replacement is registered
    deterministic, as an expression index requires.
    """
    dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


class Database:
    """One process's engine and session factory, made at start-up from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.engine = create_engine(settings)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        # The same pool, for requests that only read: no BEGIN and no COMMIT
        # around their statement, one round trip where a transaction takes
        # three. A single statement sees one snapshot anyway.
        self.reads = self.engine.execution_options(isolation_level=AUTOCOMMIT)
        # Called with each request's session after it commits (get_session).
        self.after_commit: list[Callable[[AsyncSession], None]] = []
        self._capacity = sum(settings.pool_limits)
        metrics.instrument_pool(self.engine, self._capacity)
        # DATABASE_READ_URL: a pool of the same size on the replica.
        self.replica: ReadReplica | None = None
        if settings.read_sqlalchemy_url:
            replica_engine = create_engine(settings, settings.read_sqlalchemy_url)
            self.replica = ReadReplica(replica_engine, settings.read_replica_max_lag_seconds)
            metrics.instrument_pool(replica_engine, self._capacity)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def dispose(self) -> None:
        await self.engine.dispose()
        metrics.POOL_CAPACITY.dec(self._capacity)
        if self.replica is not None:
            await self.replica.engine.dispose()
            metrics.POOL_CAPACITY.dec(self._capacity)

    async def read(
        self,
        operation: Callable[[AsyncConnection], Awaitable[T]],
        *,
        replica_allowed: bool,
    ) -> T:
        """Runs a read, outside any transaction, on the replica when allowed and
        healthy, else on the primary.

        Only for reads that need no read-your-writes (the replica may be up
        to READ_REPLICA_MAX_LAG_SECONDS behind). Should the replica fail
        meanwhile, the read runs again on the primary.
        """
        replica = self.replica
        if replica_allowed and replica is not None and replica.usable:
            try:
                async with replica.reads.connect() as connection:
                    result = await operation(connection)
            except DomainError:
                raise  # the answer (say, a 404), not the replica's failure
            except Exception as error:  # whatever the replica did, the primary answers
                replica.failed(error)
            else:
                metrics.DB_READS.labels(database="replica").inc()
                return result
        async with self.reads.connect() as connection:
            result = await operation(connection)
        metrics.DB_READS.labels(database="primary").inc()
        return result


async def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def get_session(
    database: Annotated[Database, Depends(get_database)],
) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the route returns, else rolled back.

    The dependency is declared with `scope="function"`, so the commit happens
    before the response is sent: a client never sees a 2xx for work that
    then fails to commit, nor reads before its own write is visible.
    """
    async with database.sessionmaker() as session:
        try:
            yield session
        except DomainError as error:
            if error.keeps_changes:
                await session.commit()
                _committed(database, session)
            else:
                await session.rollback()
            raise
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()
            _committed(database, session)


def _committed(database: Database, session: AsyncSession) -> None:
    for hook in database.after_commit:
        hook(session)


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def violated_unique_key(error: IntegrityError, keys: Mapping[str, Sequence[str]]) -> str | None:
    """Which of `keys` a unique violation broke, on PostgreSQL or SQLite.

    `keys` maps a name (say "sku") to what identifies its rule: the index
    name, which PostgreSQL reports (SQLite too, for expression indexes), and
    the `table.column` form SQLite reports for plain column indexes.
    """
    cause = error.orig.__cause__ if error.orig is not None else None
    constraint = getattr(cause, "constraint_name", None)
    reported = {constraint} if constraint else _sqlite_unique_names(str(error.orig))
    for key, markers in keys.items():
        if reported.intersection(markers):
            return key
    return None


def _sqlite_unique_names(message: str) -> set[str]:
    # "UNIQUE constraint failed: index 'uq_x'" or "UNIQUE constraint failed: t.a, t.b"
    _, _, names = message.partition("UNIQUE constraint failed: ")
    found = set()
    for name in (part.strip() for part in names.split(",")):
        if name.startswith("index '") and name.endswith("'"):
            name = name[len("index '") : -1]
        found.add(name)
    return found


def advisory_lock_id(name: str) -> int:
    """A PostgreSQL advisory lock number for `name`: its sha256's first 8 bytes, signed."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


async def lock_name(session: AsyncSession, name: str) -> None:
    """Serialises, until the transaction ends, every transaction that locks `name`.

    For rules about things that may have no row to lock yet (a name nobody
    has, an address no user has). PostgreSQL takes a transaction-scoped
    advisory lock; SQLite needs none, as its transactions already take the
    write lock when they begin (see _create_sqlite_engine).
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(func.pg_advisory_xact_lock(advisory_lock_id(name))))


class DuplicateValue(Exception):
    """A write broke a unique rule; `key` names which (say "email")."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


async def flush_unique(session: AsyncSession, keys: Mapping[str, Sequence[str]]) -> None:
    """Flushes, turning a violation of one of `keys` into DuplicateValue.

    The database, not a read beforehand, decides uniqueness: two requests
    racing for one value cannot both pass a check and both insert.
    """
    try:
        await session.flush()
    except IntegrityError as error:
        key = violated_unique_key(error, keys)
        if key is None:
            raise
        raise DuplicateValue(key) from error
