"""PostgreSQL's LISTEN/NOTIFY, for processes that wait on other processes' commits."""

import asyncio
import contextlib
import functools
import logging

import asyncpg

logger = logging.getLogger("app")

# How long to wait before connecting again after the database went away.
RECONNECT_SECONDS = 1.0


def set_event(event: asyncio.Event, *_: object) -> None:
    event.set()


async def first_of(*events: asyncio.Event, seconds: float) -> None:
    """Waits until one of `events` is set, or `seconds` have passed."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def listen(dsn: str, channel: str, wake: asyncio.Event, stop: asyncio.Event) -> None:
    """Sets `wake` on each notification on `channel`, until `stop` is set.

    One connection of its own, outside the request pool (a transaction-mode
    pooler cannot carry LISTEN), reconnecting by itself after the database
    restarts. `wake` is also set on every (re)connection: whatever was
    notified while this was away is for the waiter to catch up on, from the
    tables themselves; a notification is only ever a hint to look.
    """
    while not stop.is_set():
        connection = None
        try:
            connection = await asyncpg.connect(dsn, timeout=5)
            await connection.add_listener(channel, functools.partial(set_event, wake))
            wake.set()
            lost = asyncio.Event()
            connection.add_termination_listener(functools.partial(set_event, lost))
            await first_of(stop, lost, seconds=3600 * 24 * 365)
        except (OSError, asyncpg.PostgresError, TimeoutError) as error:
            logger.warning("LISTEN %s: cannot connect: %s", channel, type(error).__name__)
            await first_of(stop, seconds=RECONNECT_SECONDS)
        finally:
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.close(timeout=2)
