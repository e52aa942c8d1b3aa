"""Prometheus metrics that add up across Gunicorn workers.

Under Gunicorn, `gunicorn.conf.py` points PROMETHEUS_MULTIPROC_DIR at a
fresh directory before any worker starts; each worker then writes its
samples there and `/metrics`, whichever worker serves it, reads them all.
Without that variable (tests, a single Uvicorn process) the process-local
registry is used.
"""

import os
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter("http_requests_total", "HTTP requests answered.", ["method", "route", "status"])
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time from the request's arrival to its response, in seconds.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
IN_FLIGHT = Gauge(
    "http_requests_in_flight", "Requests being handled right now.", multiprocess_mode="livesum"
)
POOL_CAPACITY = Gauge(
    "db_pool_capacity",
    "Connections the database pools may open (pool size + overflow, all workers).",
    multiprocess_mode="livesum",
)
POOL_OPEN = Gauge(
    "db_pool_open_connections", "Database connections open.", multiprocess_mode="livesum"
)
POOL_IN_USE = Gauge(
    "db_pool_connections_in_use",
    "Database connections checked out by requests.",
    multiprocess_mode="livesum",
)
DB_READS = Counter(
    "db_reads_total",
    "Product reads and lists, by the database that served them (primary or replica).",
    ["database"],
)

MAIL_SENT = Counter("mail_messages_sent_total", "Messages handed to SMTP (or the log).", ["kind"])
MAIL_SEND_ERRORS = Counter(
    "mail_send_errors_total", "Attempts to send a message that failed.", ["kind"]
)
MAIL_FAILED = Counter(
    "mail_messages_failed_total",
    "Messages given up on after MAIL_MAX_ATTEMPTS attempts (`python -m app mail retry`).",
    ["kind"],
)
MAIL_SKIPPED = Counter(
    "mail_messages_skipped_total",
    "Messages that no longer applied when their turn came (no such user, address changed, "
    "superseded).",
    ["kind"],
)

EVENT_STREAMS = Gauge(
    "events_streams_open",
    "Live event streams open (SSE and WebSocket).",
    ["transport"],
    multiprocess_mode="livesum",
)
EVENTS_PUBLISHED = Counter(
    "events_published_total", "Product events numbered and published by a relay."
)
EVENT_CLIENTS_DROPPED = Counter(
    "events_clients_dropped_total",
    "Streams closed because their client fell EVENTS_CLIENT_BUFFER events behind.",
)
EVENT_DELIVERY_LAG = Histogram(
    "events_delivery_lag_seconds",
    "From a change's write to its event reaching this worker's streams, in seconds.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    REQUESTS.labels(method, route, str(status)).inc()
    LATENCY.labels(method, route).observe(seconds)


def instrument_pool(engine: AsyncEngine, capacity: int) -> None:
    """Follows the pool through its events: cheap, and exact at any moment."""
    POOL_CAPACITY.inc(capacity)
    pool_events = engine.sync_engine.pool

    @event.listens_for(pool_events, "connect")
    def _opened(*_: Any) -> None:
        POOL_OPEN.inc()

    @event.listens_for(pool_events, "close")
    def _closed(*_: Any) -> None:
        POOL_OPEN.dec()

    @event.listens_for(pool_events, "checkout")
    def _checked_out(*_: Any) -> None:
        POOL_IN_USE.inc()

    @event.listens_for(pool_events, "checkin")
    def _checked_in(*_: Any) -> None:
        POOL_IN_USE.dec()


router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics, summed over every worker",
    description="Prometheus text format: requests, latency, requests in flight, database "
    "pools and mail delivery. Keep it off the public internet at your proxy.",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics() -> Response:
    if os.environ.get(MULTIPROCESS_DIR_VARIABLE):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
