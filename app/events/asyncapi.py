"""The AsyncAPI 3.0 document of the live product events, served at /asyncapi.json.

A stream of events is neither a request nor a response, so the OpenAPI
document cannot describe it; this document does. It is built from the
OpenAPI document: the same title, version, contact and licence, and the
product schema copied from it, so the two cannot disagree about a product.

In AsyncAPI 3 a document describes one application, and its operations are
what that application does. The application here is this service, which
*sends* the events (`action: send`); a client is the other side and
receives them. `docs/asyncapi.json` is this document, exported with
`python -m app.events.asyncapi > docs/asyncapi.json`.
"""

import json
from typing import Any, NamedTuple

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

ASYNCAPI_URL = "/asyncapi.json"
SSE_ADDRESS = "/api/v1/products/events"
WEBSOCKET_ADDRESS = "/api/v1/products/ws"

# Both documents keep their schemas under the same pointer, so a rewritten
# reference reads as before; the walk over them still finds (and copies)
# every schema the product schema needs.
OPENAPI_SCHEMAS = "#/components/schemas/"
ASYNCAPI_SCHEMAS = "#/components/schemas/"
# The operation whose answer is "the product", as the events carry it.
PRODUCT_OPERATION = "get_product"

DESCRIPTION = """
Changes to the product catalogue as they are committed, over two transports
that carry the same events: Server-Sent Events at `/api/v1/products/events`
and a WebSocket at `/api/v1/products/ws`. No credentials are needed.

* **Every change, in order.** A client sees every event whichever worker or
  replica it is connected to, in the order the changes were committed. Event
  ids are positive integers that grow in that order.
* **Resuming.** Send the last id you received (`last_event_id`, or the
  `Last-Event-ID` header on the SSE stream): every later event follows, none
  missing and none twice.
* **Reset.** When that id is older than the oldest event still kept (an hour,
  `EVENTS_RETENTION_SECONDS`), a `reset` event without an id comes first:
  reload what you hold (`GET /api/v1/products`), then the stream goes on live.
* **Filtering.** `owner_id` limits the stream to one owner's products.
* A product in an event is exactly what `GET /api/v1/products/{product_id}`
  returns; the REST API is described at `/openapi.json`.
"""

SSE_DESCRIPTION = """
A `text/event-stream` response. Each event has an `id:` line (its id; none on
`reset`), an `event:` line (its name) and a `data:` line (the JSON payload of
the message). Comment lines (`: ...`) come at least every 15 seconds to keep
the connection open; skip them. Resume with the `Last-Event-ID` header (a
browser's `EventSource` sends it by itself when it reconnects) or the
`last_event_id` query parameter.

Errors are problem details (RFC 9457, `application/problem+json`): 422 for an
invalid parameter; 503 with `Retry-After` when this worker already has
`EVENTS_MAX_CLIENTS` (1000) streams open.
"""

WEBSOCKET_DESCRIPTION = """
Each event is one JSON text message, `{"id": ..., "event": ..., "data": ...}`,
where `id` is null on `reset`. The server expects no message from the client.

Close codes: 1001 when the server shuts down (reconnect with `last_event_id`);
1013 (try again later) when this worker already has `EVENTS_MAX_CLIENTS`
(1000) connections; 1008 when the client reads too slowly and its buffer of
`EVENTS_CLIENT_BUFFER` (1000) events is full (reconnect with the last id
received); 1008 policy violation for invalid parameters.
"""

QUERY = {
    "type": "object",
    "properties": {
        "owner_id": {
            "type": "integer",
            "minimum": 1,
            "description": "Only the events about this owner's products.",
        },
        "last_event_id": {
            "type": "integer",
            "minimum": 0,
            "description": "Resume: the events after this id follow.",
        },
    },
}


def _own_schemas(product_ref: str) -> dict[str, Any]:
    """The payloads (`data`) of the events, and the event id."""

    def change(product: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["id", "version", "product"],
            "properties": {
                "id": {"type": "integer", "description": "The product's id."},
                "version": {"type": "integer", "description": "The product's version."},
                "product": product,
            },
        }

    return {
        "EventId": {
            "type": "integer",
            "minimum": 1,
            "description": "Grows in the order the changes were committed.",
        },
        "ProductChange": change({"$ref": product_ref}),
        "ProductDeletion": change({"type": "null"}),
        "Reset": {"type": "object", "maxProperties": 0},
    }


EXAMPLE_PRODUCT = {
    "id": 42,
    "name": "Espresso cup",
    "description": "Porcelain, 80 ml.",
    "price": 12.5,
    "tax": 2.5,
    "sku": "CUP-80",
    "owner_id": 7,
    "created_at": "2025-01-31T09:00:00Z",
    "updated_at": "2025-01-31T09:30:00Z",
    "version": 2,
}


class Event(NamedTuple):
    key: str  # of its message in a channel
    name: str  # SSE `event:`, WebSocket `"event"`
    title: str
    summary: str
    schema: str  # of its data
    example: dict[str, Any]  # data


EVENTS = [
    Event(
        "productCreated",
        "product.created",
        "Product created",
        "A product was created.",
        "ProductChange",
        {"id": 42, "version": 1, "product": {**EXAMPLE_PRODUCT, "version": 1}},
    ),
    Event(
        "productUpdated",
        "product.updated",
        "Product updated",
        "A product was changed.",
        "ProductChange",
        {"id": 42, "version": 2, "product": EXAMPLE_PRODUCT},
    ),
    Event(
        "productDeleted",
        "product.deleted",
        "Product deleted",
        "A product was deleted.",
        "ProductDeletion",
        {"id": 42, "version": 3, "product": None},
    ),
    Event(
        "reset",
        "reset",
        "Reset",
        "Events were missed: reload what you hold; the stream then goes on live.",
        "Reset",
        {},
    ),
]
EVENT_NAMES = tuple(event.name for event in EVENTS)


def product_schema_name(openapi: dict[str, Any]) -> str:
    """The name of the schema `GET /api/v1/products/{product_id}` answers with."""
    for item in openapi["paths"].values():
        for operation in item.values():
            if isinstance(operation, dict) and operation.get("operationId") == PRODUCT_OPERATION:
                content = operation["responses"]["200"]["content"]["application/json"]
                return str(content["schema"]["$ref"]).removeprefix(OPENAPI_SCHEMAS)
    raise LookupError(f"no operation {PRODUCT_OPERATION!r} in the OpenAPI document")


def _rewrite(node: Any, found: list[str]) -> Any:
    """A copy of an OpenAPI schema with its references pointing into this document."""
    if isinstance(node, list):
        return [_rewrite(value, found) for value in node]
    if not isinstance(node, dict):
        return node
    copy = {key: _rewrite(value, found) for key, value in node.items()}
    ref = node.get("$ref")
    if isinstance(ref, str):
        if not ref.startswith(OPENAPI_SCHEMAS):
            raise ValueError(f"cannot copy a reference to {ref}")
        found.append(ref.removeprefix(OPENAPI_SCHEMAS))
        copy["$ref"] = ASYNCAPI_SCHEMAS + ref.removeprefix(OPENAPI_SCHEMAS)
    return copy


def copy_schemas(openapi: dict[str, Any], name: str) -> dict[str, Any]:
    """The named OpenAPI schema and every schema it refers to, directly or not."""
    schemas = openapi["components"]["schemas"]
    copied: dict[str, Any] = {}
    pending = [name]
    while pending:
        current = pending.pop()
        if current not in copied:
            copied[current] = _rewrite(schemas[current], pending)
    return dict(sorted(copied.items()))


def _message_key(event: Event, websocket: bool) -> str:
    """`sseProductCreated`, `wsProductCreated`: the event's message in the components."""
    return ("ws" if websocket else "sse") + event.key[0].upper() + event.key[1:]


def _messages(websocket: bool) -> dict[str, Any]:
    messages = {}
    for event in EVENTS:
        data: dict[str, Any] = {"$ref": ASYNCAPI_SCHEMAS + event.schema}
        reset = event.name == "reset"
        if websocket:
            event_id = {"type": "null"} if reset else {"$ref": ASYNCAPI_SCHEMAS + "EventId"}
            payload = {
                "type": "object",
                "required": ["id", "event", "data"],
                "properties": {"id": event_id, "event": {"const": event.name}, "data": data},
            }
            example = {"id": None if reset else 1234, "event": event.name, "data": event.example}
            description = "The payload is the whole text message."
        else:
            payload, example = data, event.example
            id_line = "no `id:` line" if reset else "`id:` the event's id (an `EventId`)"
            description = f"`event: {event.name}`, {id_line}, and the payload as `data:`."
        messages[_message_key(event, websocket)] = {
            "name": event.name,
            "title": event.title,
            "summary": event.summary,
            "description": description,
            "payload": payload,
            "examples": [{"name": event.key, "payload": example}],
        }
    return messages


def _channel_messages(websocket: bool) -> dict[str, Any]:
    return {
        event.key: {"$ref": "#/components/messages/" + _message_key(event, websocket)}
        for event in EVENTS
    }


def _operation(channel: str, title: str, bindings: dict[str, Any] | None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        # The document describes this service (AsyncAPI 3): it sends, a client receives.
        "action": "send",
        "channel": {"$ref": f"#/channels/{channel}"},
        "title": title,
        "summary": "Every product event, in commit order, to each client that connects.",
        "messages": [{"$ref": f"#/channels/{channel}/messages/{e.key}"} for e in EVENTS],
    }
    if bindings:
        operation["bindings"] = bindings
    return operation


def asyncapi_document(openapi: dict[str, Any]) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of the product events, from the service's OpenAPI one."""
    info = openapi["info"]
    license_ = {"name": info["license"]["name"]}
    if "identifier" in info["license"]:  # AsyncAPI takes a URL, not an SPDX identifier
        license_["url"] = f"https://spdx.org/licenses/{info['license']['identifier']}.html"
    product = product_schema_name(openapi)
    schemas = copy_schemas(openapi, product)
    own = _own_schemas(ASYNCAPI_SCHEMAS + product)
    if clash := schemas.keys() & own.keys():
        raise ValueError(f"schema names taken by the OpenAPI document: {sorted(clash)}")
    # AsyncAPI servers need a host: a variable, since the real one is
    # whichever serves this document (as the OpenAPI document's "/").
    host = {
        "default": "localhost:8000",
        "description": "The host (and port) of the server that serves this document.",
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": info["title"],
            "version": info["version"],
            "description": DESCRIPTION.strip(),
            "contact": info["contact"],
            "license": license_,
        },
        "defaultContentType": "application/json",
        "servers": {
            "http": {
                "host": "{host}",
                "protocol": "http",
                "description": "The SSE stream (`https` behind TLS).",
                "variables": {"host": host},
            },
            "ws": {
                "host": "{host}",
                "protocol": "ws",
                "description": "The WebSocket (`wss` behind TLS).",
                "variables": {"host": host},
            },
        },
        "channels": {
            "productEvents": {
                "address": SSE_ADDRESS,
                "title": "Product events (Server-Sent Events)",
                "description": SSE_DESCRIPTION.strip(),
                "servers": [{"$ref": "#/servers/http"}],
                "messages": _channel_messages(websocket=False),
            },
            "productEventsWebSocket": {
                "address": WEBSOCKET_ADDRESS,
                "title": "Product events (WebSocket)",
                "description": WEBSOCKET_DESCRIPTION.strip(),
                "servers": [{"$ref": "#/servers/ws"}],
                "messages": _channel_messages(websocket=True),
                "bindings": {"ws": {"method": "GET", "query": QUERY, "bindingVersion": "0.1.0"}},
            },
        },
        "operations": {
            "sendProductEvents": _operation(
                "productEvents",
                "Stream the product events (SSE)",
                {"http": {"method": "GET", "query": QUERY, "bindingVersion": "0.3.0"}},
            ),
            "sendProductEventsOverWebSocket": _operation(
                "productEventsWebSocket", "Stream the product events (WebSocket)", None
            ),
        },
        "components": {
            "schemas": {**schemas, **own},
            "messages": {**_messages(websocket=False), **_messages(websocket=True)},
        },
    }


def render(document: dict[str, Any]) -> str:
    """The document as docs/asyncapi.json holds it."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


router = APIRouter()


@router.get(ASYNCAPI_URL, include_in_schema=False)
async def asyncapi_json(request: Request) -> JSONResponse:
    # Not behind DOCS_ENABLED here: the app includes this router only when docs are on.
    state = request.app.state
    document: dict[str, Any] | None = getattr(state, "asyncapi_document", None)
    if document is None:
        document = state.asyncapi_document = asyncapi_document(request.app.openapi())
    return JSONResponse(document, media_type="application/json")


def _main() -> None:
    import asyncio
    import sys

    from app.core.config import get_settings
    from app.main import create_app

    app = create_app(get_settings().model_copy(update={"docs_enabled": True}))
    try:
        sys.stdout.write(render(asyncapi_document(app.openapi())))
    finally:
        asyncio.run(app.state.database.dispose())


if __name__ == "__main__":
    _main()
