"""Live product events: Server-Sent Events and a WebSocket, both fed by the worker's EventHub."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.requests import HTTPConnection
from sse_starlette import EventSourceResponse

from app.core import metrics
from app.core.dependencies import SettingsDep
from app.core.exceptions import Busy
from app.core.middleware import HEAD_REQUEST
from app.core.models import MAX_ID
from app.core.params import PositiveId
from app.core.routing import problem_responses
from app.events.hub import SEND_TIMEOUT_SECONDS, EventHub, Subscription, TooManyStreams

router = APIRouter(prefix="/products", tags=["products"])

# WebSocket close codes (RFC 6455 section 7.4.1).
GOING_AWAY = 1001
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013
# A client told to come back: about when a slot may be free again.
BUSY_RETRY_AFTER_SECONDS = 5


async def get_hub(connection: HTTPConnection) -> EventHub:
    hub: EventHub = connection.app.state.event_hub
    return hub


HubDep = Annotated[EventHub, Depends(get_hub)]
OwnerQuery = Annotated[
    PositiveId | None,
    Query(description="Only the events of this owner's products."),
]
LastEventIdQuery = Annotated[
    int | None,
    Query(
        ge=0,
        le=MAX_ID,
        description="Resume: every event after this id first, then the live ones. "
        "`Last-Event-ID` wins when both are sent.",
    ),
]
LastEventIdHeader = Annotated[
    int | None,
    Header(
        alias="Last-Event-ID",
        ge=0,
        le=MAX_ID,
        description="Resume after this event id (EventSource sends it by itself on reconnect).",
    ),
]

_STREAM_EXAMPLE = (
    ": stream open\n\n"
    "id: 41\nevent: product.updated\n"
    'data: {"id":7,"version":3,"product":{"id":7,"name":"Espresso cup","description":null,'
    '"price":11.9,"tax":null,"sku":"CUP-080-WHT","owner_id":2,'
    '"created_at":"2026-12-05T10:00:00Z","updated_at":"2026-12-05T10:05:00Z","version":3}}\n\n'
    'id: 42\nevent: product.deleted\ndata: {"id":7,"version":3,"product":null}\n\n'
    ": ping\n\n"
)


@router.get(
    "/events",
    summary="Live product events (Server-Sent Events)",
    description="Every create, change and delete of a product committed after the stream "
    "began, in commit order, from every worker and server: `product.created`, "
    "`product.updated`, `product.deleted`, with `id:` (growing in delivery order) and "
    '`data: {"id", "version", "product"}` (`product` as GET returns it, null once deleted). '
    "Resume with `Last-Event-ID` (or `last_event_id`): the events after it come first; if they "
    "are no longer all kept (`EVENTS_RETENTION_SECONDS`), an event `reset` (data `{}`, no id) "
    "comes first instead: reload, then follow. A comment line comes at least every 15 "
    "seconds. A client `EVENTS_CLIENT_BUFFER` events behind is disconnected; it resumes "
    "with its last id. The same events as JSON messages: the WebSocket `/api/v1/products/ws`; "
    "the whole stream is described by the AsyncAPI document at `/asyncapi.json`.",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "The event stream; it stays open.",
            "content": {
                "text/event-stream": {
                    "schema": {"type": "string"},
                    "example": _STREAM_EXAMPLE,
                }
            },
        },
        **problem_responses(
            422,
            503,
            _503="The database is unavailable, or this worker already serves "
            "`EVENTS_MAX_CLIENTS` streams; retry after `Retry-After` seconds.",
        ),
    },
)
async def product_events(
    request: Request,
    hub: HubDep,
    settings: SettingsDep,
    owner_id: OwnerQuery = None,
    last_event_id: LastEventIdQuery = None,
    last_event_id_header: LastEventIdHeader = None,
) -> EventSourceResponse:
    if request.scope.get(HEAD_REQUEST):
        return EventSourceResponse(_nothing())  # the stream's headers, without the stream
    resume = last_event_id_header if last_event_id_header is not None else last_event_id
    try:
        subscription = await hub.subscribe(owner_id, resume)
    except TooManyStreams:
        raise Busy(
            "This server has as many event streams open as it may; retry shortly.",
            BUSY_RETRY_AFTER_SECONDS,
        ) from None
    return EventSourceResponse(
        _sse(subscription),
        ping=settings.events_heartbeat_seconds,
        sep="\n",
        send_timeout=SEND_TIMEOUT_SECONDS,
    )


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""


async def _sse(subscription: Subscription) -> AsyncIterator[bytes]:
    metrics.EVENT_STREAMS.labels("sse").inc()
    try:
        yield b": stream open\n\n"
        async for event in subscription.events():
            yield event.sse
    finally:
        subscription.close()
        metrics.EVENT_STREAMS.labels("sse").dec()


@router.websocket("/ws")
async def product_events_websocket(
    websocket: WebSocket,
    hub: HubDep,
    owner_id: OwnerQuery = None,
    last_event_id: LastEventIdQuery = None,
) -> None:
    """The events of GET /products/events, one JSON text message each: {"id", "event", "data"}.

    Invalid parameters close the handshake with 1008 (FastAPI's validation);
    a worker at EVENTS_MAX_CLIENTS closes with 1013, a client too far behind
    with 1008, a stopping worker with 1001.
    """
    try:
        subscription = await hub.subscribe(owner_id, last_event_id)
    except TooManyStreams:
        await websocket.accept()
        await websocket.close(TRY_AGAIN_LATER, "too many streams; retry shortly")
        return
    metrics.EVENT_STREAMS.labels("websocket").inc()
    try:
        await websocket.accept()
        reader = asyncio.create_task(_until_disconnect(websocket, subscription))
        try:
            async for event in subscription.events():
                async with asyncio.timeout(SEND_TIMEOUT_SECONDS):
                    await websocket.send_text(event.ws)
        finally:
            reader.cancel()
        if subscription.closed:
            return  # the client left
        if subscription.dropped:
            await websocket.close(POLICY_VIOLATION, "too far behind; resume with last_event_id")
        else:
            await websocket.close(GOING_AWAY, "server stopping; reconnect")
    except (WebSocketDisconnect, OSError, TimeoutError):
        pass  # the client went, or would not take what was sent
    finally:
        subscription.close()
        metrics.EVENT_STREAMS.labels("websocket").dec()


async def _until_disconnect(websocket: WebSocket, subscription: Subscription) -> None:
    """The client sends nothing we read; this notices when it leaves."""
    with contextlib.suppress(Exception):
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass
    subscription.close()
