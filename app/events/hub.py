"""Live product events in one worker: the relay, the fan-out to its streams, and their end.

Every worker of every server runs one EventHub, and they share nothing but
the database:

- **Relay.** After a commit that wrote events (and every second, for any
  process that died before it got there), the hub publishes them: one
  statement, under a lock only one relay holds at a time, numbers what has
  committed in the order it became visible (app/events/repository.py).
- **Fan-out.** Each hub follows the published log: woken by NOTIFY on
  PostgreSQL (one LISTEN connection per worker, outside the pool; its URL
  is DATABASE_LISTEN_URL, so it can bypass a transaction-mode pooler), or
  by polling every EVENTS_POLL_SECONDS on SQLite and as a safety net. It
  reads each new event once and hands it to its streams' buffers,
  formatted once for both transports.
- **Streams.** A stream registers before it reads anything, then catches
  up from the log (to resume, or for what the hub delivered just before),
  then takes its buffer: nothing missed, nothing twice. A buffer that
  fills up (EVENTS_CLIENT_BUFFER) means a client that cannot keep up: it is
  dropped, and resumes later with its last id.
- **The end.** Uvicorn waits for open responses on shutdown; streams never
  end by themselves. A SIGTERM handler chained in front of Uvicorn's (and
  the lifespan's shutdown) sets `stopping`, and every stream ends at once.
"""

import asyncio
import contextlib
import functools
import logging
import signal
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import FrameType
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core import metrics
from app.core.config import Settings
from app.core.database import Database
from app.core.models import utc_now
from app.core.notifications import first_of, listen
from app.events.models import EventKind
from app.events.repository import PUBLISHED_CHANNEL, WRITTEN, Bounds, EventLog

logger = logging.getLogger("app.events")

RELAY_BATCH = 1000
FETCH_BATCH = 500
# Every hub also publishes on this timer: the events of a process that died
# between its commit and its relay pass wait no longer than this.
RELAY_SWEEP_SECONDS = 1.0
PURGE_EVERY_SECONDS = 60.0
# With LISTEN, polling is only a safety net: this many times less often.
LISTEN_POLL_FACTOR = 10
# A send that waits this long on a client that reads nothing ends its stream.
SEND_TIMEOUT_SECONDS = 10.0


class TooManyStreams(Exception):
    """This worker already serves EVENTS_MAX_CLIENTS streams."""


@dataclass(frozen=True, slots=True)
class Event:
    """A published event, formatted once for every stream of the worker."""

    position: int
    owner_id: int
    sse: bytes  # id:, event: and data: lines, and the blank line that ends them
    ws: str  # {"id", "event", "data"}
    written_at: datetime

    @classmethod
    def from_row(
        cls, position: int, kind: EventKind, owner_id: int, data: str, written_at: datetime
    ) -> "Event":
        name = kind.value
        return cls(
            position=position,
            owner_id=owner_id,
            sse=f"id: {position}\nevent: {name}\ndata: {data}\n\n".encode(),
            ws=f'{{"id":{position},"event":"{name}","data":{data}}}',
            written_at=written_at,
        )


@dataclass(frozen=True, slots=True)
class Reset:
    """Events after the id a client asked for are no longer all kept: reload, then go on."""

    sse: bytes = b"event: reset\ndata: {}\n\n"
    ws: str = '{"id":null,"event":"reset","data":{}}'


RESET = Reset()


class Subscriber:
    """One stream's buffer of events to send, filled by the hub."""

    __slots__ = ("buffer", "closed", "dropped", "owner_id", "queue", "wake")

    def __init__(self, owner_id: int | None, buffer: int) -> None:
        self.owner_id = owner_id
        self.buffer = buffer
        self.queue: deque[Event] = deque()
        self.wake = asyncio.Event()
        self.dropped = False  # by the hub: too far behind
        self.closed = False  # by the stream: its client left


class Subscription:
    """What one stream sends: a reset if needed, the catch-up from the log, then live events."""

    def __init__(
        self, hub: "EventHub", subscriber: Subscriber, start: int, caught_up: int, reset: bool
    ) -> None:
        self._hub = hub
        self._subscriber = subscriber
        self._start = start  # send events after this position
        self._caught_up = caught_up  # the buffer holds what comes after this one
        self._reset = reset

    @property
    def dropped(self) -> bool:
        return self._subscriber.dropped

    @property
    def closed(self) -> bool:
        return self._subscriber.closed

    async def events(self) -> AsyncIterator[Event | Reset]:
        """Until the client is dropped or the worker stops; the caller ends the stream then."""
        subscriber, hub = self._subscriber, self._hub
        if self._reset:
            yield RESET
        position = self._start
        while position < self._caught_up and not (hub.stopping.is_set() or subscriber.closed):
            rows = await hub.read_log(position, self._caught_up, subscriber.owner_id)
            if not rows:
                break
            for row in rows:
                yield Event.from_row(*row)
            position = rows[-1][0]
        while not (hub.stopping.is_set() or subscriber.closed):
            subscriber.wake.clear()
            # Dropped: what is still buffered is not sent; the client resumes with its last id.
            while subscriber.queue and not subscriber.dropped:
                event = subscriber.queue.popleft()
                if event.position > self._start:
                    yield event
            if subscriber.dropped or subscriber.closed:
                return
            await first_of(subscriber.wake, hub.stopping, seconds=3600)

    def close(self) -> None:
        """The stream is over: the hub forgets it, and events() returns."""
        self._subscriber.closed = True
        self._subscriber.wake.set()
        self._hub.unsubscribe(self._subscriber)


class EventHub:
    def __init__(self, database: Database, settings: Settings) -> None:
        self._database = database
        self._settings = settings
        self._subscribers: set[Subscriber] = set()
        self._last: int | None = None  # the newest position handed to the streams
        self.stopping = asyncio.Event()
        self._relay_wake = asyncio.Event()
        self._fetch_wake = asyncio.Event()
        self._relay_lock = asyncio.Lock()
        self._last_pass_started = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._restore_signals: list[Callable[[], None]] = []

    # --- Life cycle -------------------------------------------------------------

    async def start(self) -> None:
        self._chain_shutdown_signals()
        self._tasks = [
            asyncio.create_task(self._relay_loop()),
            asyncio.create_task(self._fetch_loop()),
        ]
        dsn = self._settings.listen_dsn
        if dsn is not None:
            self._tasks.append(
                asyncio.create_task(listen(dsn, PUBLISHED_CHANNEL, self._fetch_wake, self.stopping))
            )

    async def stop(self) -> None:
        self.stopping.set()
        for restore in self._restore_signals:
            restore()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _chain_shutdown_signals(self) -> None:
        """Streams end on SIGTERM (or SIGINT), before Uvicorn waits for them to.

        Only where the server installed a handler of its own (Uvicorn, also
        under Gunicorn's UvicornWorker): it is called after ours, unchanged.
        """
        loop = asyncio.get_running_loop()
        for number in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(number)
            if not callable(previous):
                continue

            def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
                loop.call_soon_threadsafe(self.stopping.set)
                previous(signum, frame)

            try:
                signal.signal(number, handler)
            except ValueError:  # not the main thread: the lifespan's end will do
                continue
            self._restore_signals.append(functools.partial(_restore, number, previous))

    # --- The relay ----------------------------------------------------------------

    def after_commit(self, session: AsyncSession) -> None:
        """Called after each request's commit: publish at once if it wrote events."""
        if session.info.get(WRITTEN):
            self._relay_wake.set()

    async def publish_now(self) -> None:
        """Publishes every event committed before this call (a pass that began later covers it)."""
        asked = time.monotonic()
        async with self._relay_lock:
            if self._last_pass_started > asked:
                return
            self._last_pass_started = time.monotonic()
            published = 0
            while True:
                async with self._database.sessionmaker() as session, session.begin():
                    count = await EventLog(session).publish(utc_now(), limit=RELAY_BATCH)
                published += count
                if count < RELAY_BATCH:
                    break
        if published:
            metrics.EVENTS_PUBLISHED.inc(published)
            self._fetch_wake.set()

    async def _relay_loop(self) -> None:
        next_purge = time.monotonic() + PURGE_EVERY_SECONDS
        while not self.stopping.is_set():
            await first_of(self._relay_wake, self.stopping, seconds=RELAY_SWEEP_SECONDS)
            self._relay_wake.clear()
            if self.stopping.is_set():
                return
            try:
                await self.publish_now()
                if time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + PURGE_EVERY_SECONDS
                    await self.purge()
            except Exception as error:  # the database away: the next pass tries again
                logger.warning("event relay: %s", type(error).__name__)

    async def purge(self) -> int:
        """Deletes events older than EVENTS_RETENTION_SECONDS (the newest is always kept)."""
        cutoff = utc_now() - timedelta(seconds=self._settings.events_retention_seconds)
        async with self._database.sessionmaker() as session, session.begin():
            return await EventLog(session).purge(cutoff)

    # --- The fan-out --------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        poll = self._settings.events_poll_seconds
        if self._settings.listen_dsn is not None:
            poll *= LISTEN_POLL_FACTOR
        while not self.stopping.is_set():
            try:
                await self._fetch()
            except Exception as error:
                logger.warning("event fan-out: %s", type(error).__name__)
            await first_of(self._fetch_wake, self.stopping, seconds=poll)
            self._fetch_wake.clear()

    async def _fetch(self) -> None:
        position = await self._begin_at_newest()
        while True:
            rows = await self.read_log(position, None, None)
            now = utc_now()
            for row in rows:
                event = Event.from_row(*row)
                metrics.EVENT_DELIVERY_LAG.observe((now - event.written_at).total_seconds())
                self._deliver(event)
                self._last = position = event.position
            if len(rows) < FETCH_BATCH:
                return

    async def _begin_at_newest(self) -> int:
        """The newest position handed to the streams. Before the first fetch or
        stream, the newest published: what came before is no stream's (one that
        resumes reads it from the log itself)."""
        if self._last is None:
            newest = (await self._bounds()).newest or 0
            if self._last is None:  # unless a fetch or stream got there meanwhile
                self._last = newest
        return self._last

    async def _bounds(self) -> Bounds:
        async with self._database.sessionmaker() as session:
            return await EventLog(session).bounds()

    def _deliver(self, event: Event) -> None:
        for subscriber in tuple(self._subscribers):
            if subscriber.owner_id is not None and subscriber.owner_id != event.owner_id:
                continue
            if len(subscriber.queue) >= subscriber.buffer:
                # Never wait for a slow client: it goes, the others go on.
                subscriber.dropped = True
                self._subscribers.discard(subscriber)
                metrics.EVENT_CLIENTS_DROPPED.inc()
            else:
                subscriber.queue.append(event)
            subscriber.wake.set()

    async def read_log(
        self, after: int, until: int | None, owner_id: int | None
    ) -> list[tuple[int, EventKind, int, str, datetime]]:
        async with self._database.sessionmaker() as session:
            rows = await EventLog(session).after(
                after, limit=FETCH_BATCH, until=until, owner_id=owner_id
            )
        return [tuple(row) for row in rows]  # type: ignore[misc]

    # --- Streams ------------------------------------------------------------------

    async def subscribe(self, owner_id: int | None, last_event_id: int | None) -> Subscription:
        """A new stream: live events from now on, or everything after `last_event_id`.

        Raises TooManyStreams at EVENTS_MAX_CLIENTS. Call before the
        response starts: "from now on" is then from before the client heard
        anything.
        """
        if len(self._subscribers) >= self._settings.events_max_clients:
            raise TooManyStreams
        await self._begin_at_newest()
        subscriber = Subscriber(owner_id, self._settings.events_client_buffer)
        self._subscribers.add(subscriber)
        # From here on the hub fills the buffer with what comes after this:
        caught_up = self._last or 0
        try:
            reset = False
            if last_event_id is None:
                # Whatever committed before this stream began is not its to
                # see: published now, so that it is below `start`.
                await self.publish_now()
                start = (await self._bounds()).newest or 0
            else:
                bounds = await self._bounds()
                newest = bounds.newest or 0
                forgotten = bounds.oldest is not None and last_event_id < bounds.oldest - 1
                unknown = last_event_id > max(newest, caught_up)
                reset = forgotten or unknown
                start = max(newest, caught_up) if reset else last_event_id
        except BaseException:
            self.unsubscribe(subscriber)
            raise
        return Subscription(self, subscriber, start, caught_up, reset)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)


def _restore(number: int, previous: Any) -> None:
    with contextlib.suppress(ValueError):
        signal.signal(number, previous)
