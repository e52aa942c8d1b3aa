"""The AsyncAPI 3.0 document of the live product events (API.md 1.1, live events).

It names both transports (Server-Sent Events and the WebSocket) with their
addresses, query parameters and the four events; its product schema is the
OpenAPI document's own, copied when it is built, so the two cannot drift;
docs/asyncapi.json is exactly what the code builds; the official parser
(@asyncapi/parser, pinned in npm-tools/package.json, through
npm-tools/asyncapi-validate.mjs) finds no error in it and does find them in
broken copies; and the Swagger UI page links it.
"""

import copy
import json
import math
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
from fastapi import FastAPI

from app.events.asyncapi import (
    ASYNCAPI_URL,
    EVENT_NAMES,
    SSE_ADDRESS,
    WEBSOCKET_ADDRESS,
    asyncapi_document,
    copy_schemas,
    render,
    router,
)
from tests.conftest import PROJECT_ROOT

EXPORTED = PROJECT_ROOT / "docs" / "asyncapi.json"
REGENERATE = ".venv/bin/python -m app.events.asyncapi > docs/asyncapi.json"
VALIDATE = PROJECT_ROOT / "npm-tools" / "asyncapi-validate.mjs"
NODE = shutil.which("node")
SCHEMAS = "#/components/schemas/"
DELETED = {"id": 42, "version": 3, "product": None}

needs_parser = pytest.mark.skipif(
    NODE is None
    or not (PROJECT_ROOT / "npm-tools" / "node_modules" / "@asyncapi" / "parser").exists(),
    reason="@asyncapi/parser is not installed (npm ci --prefix npm-tools)",
)


def resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def channel_messages(document: dict[str, Any], channel: str) -> dict[str, Any]:
    return {
        key: resolve(document, ref["$ref"])
        for key, ref in document["channels"][channel]["messages"].items()
    }


def test_docs_asyncapi_json_is_what_the_service_serves(app: FastAPI) -> None:
    built = render(asyncapi_document(app.openapi()))
    assert EXPORTED.read_text() == built, f"docs/asyncapi.json is out of date: {REGENERATE}"


def test_the_document_is_asyncapi_3_with_both_transports(app: FastAPI) -> None:
    openapi = app.openapi()
    document = asyncapi_document(openapi)
    assert document["asyncapi"] == "3.0.0"
    info = document["info"]
    assert (info["title"], info["version"]) == (
        openapi["info"]["title"],
        openapi["info"]["version"],
    )
    assert info["contact"] == openapi["info"]["contact"]
    assert info["license"]["name"] == openapi["info"]["license"]["name"]
    assert info["description"]
    assert document["defaultContentType"] == "application/json"

    assert set(EVENT_NAMES) == {"product.created", "product.updated", "product.deleted", "reset"}
    channels = document["channels"]
    addresses = {name: channel["address"] for name, channel in channels.items()}
    assert addresses == {"productEvents": SSE_ADDRESS, "productEventsWebSocket": WEBSOCKET_ADDRESS}
    assert SSE_ADDRESS == "/api/v1/products/events"
    assert WEBSOCKET_ADDRESS == "/api/v1/products/ws"
    for name, protocol in [("productEvents", "http"), ("productEventsWebSocket", "ws")]:
        [server] = channels[name]["servers"]
        assert resolve(document, server["$ref"])["protocol"] == protocol
        messages = channel_messages(document, name)
        assert {m["name"] for m in messages.values()} == set(EVENT_NAMES)

    # The service sends, a client receives; one operation per transport.
    operations = document["operations"].values()
    assert {op["channel"]["$ref"] for op in operations} == {f"#/channels/{c}" for c in channels}
    assert {op["action"] for op in operations} == {"send"}

    # The query parameters, as bindings of each transport.
    ws_query = channels["productEventsWebSocket"]["bindings"]["ws"]["query"]
    [sse] = [op for op in operations if op["channel"]["$ref"] == "#/channels/productEvents"]
    sse_query = sse["bindings"]["http"]["query"]
    for query in (ws_query, sse_query):
        assert query["type"] == "object"
        assert query["properties"]["owner_id"]["minimum"] == 1
        assert query["properties"]["last_event_id"]["minimum"] == 0
        assert {p["type"] for p in query["properties"].values()} == {"integer"}


def test_the_product_schema_is_the_openapi_one(app: FastAPI) -> None:
    openapi = app.openapi()
    document = asyncapi_document(openapi)
    answer = openapi["paths"]["/api/v1/products/{product_id}"]["get"]["responses"]["200"]
    product_ref = answer["content"]["application/json"]["schema"]["$ref"]
    name = product_ref.removeprefix(SCHEMAS)
    assert document["components"]["schemas"][name] == openapi["components"]["schemas"][name]
    change = document["components"]["schemas"]["ProductChange"]
    assert change["properties"]["product"] == {"$ref": SCHEMAS + name}
    # Every reference in the document resolves.
    for ref in json.dumps(document).split('"$ref": "')[1:]:
        resolve(document, ref[: ref.index('"')])


def test_every_schema_the_product_refers_to_is_copied(app: FastAPI) -> None:
    openapi = copy.deepcopy(app.openapi())
    schemas = openapi["components"]["schemas"]
    schemas["ProductRead"]["properties"]["category"] = {
        "anyOf": [{"$ref": SCHEMAS + "Category"}, {"type": "null"}]
    }
    schemas["Category"] = {"type": "object", "properties": {"tags": {"$ref": SCHEMAS + "Tags"}}}
    schemas["Tags"] = {"type": "array", "items": {"$ref": SCHEMAS + "Category"}}  # a cycle
    copied = copy_schemas(openapi, "ProductRead")
    assert set(copied) == {"ProductRead", "Category", "Tags"}
    assert copied["Category"] == schemas["Category"]
    document = asyncapi_document(openapi)
    assert "UserRead" not in document["components"]["schemas"]
    assert document["components"]["schemas"]["Tags"] == schemas["Tags"]

    schemas["Category"]["properties"]["tags"] = {"$ref": "https://example.com/tags.json"}
    with pytest.raises(ValueError, match="cannot copy"):
        copy_schemas(openapi, "ProductRead")


def payload_validator(document: dict[str, Any], message: dict[str, Any]) -> Any:
    # AsyncAPI schemas are JSON Schema draft 7 (and a few keywords more).
    schema = {"allOf": [message["payload"]], "components": document["components"]}
    return jsonschema_rs.Draft7Validator(schema, validate_formats=True)


def test_every_example_and_the_contracts_messages_fit_their_payloads(app: FastAPI) -> None:
    document = asyncapi_document(app.openapi())
    messages = document["components"]["messages"]
    assert len(messages) == 8
    for key, message in messages.items():
        validator = payload_validator(document, message)
        for example in message["examples"]:
            errors = [e.message for e in validator.iter_errors(example["payload"])]
            assert not errors, (key, errors)

    ws = channel_messages(document, "productEventsWebSocket")
    sse = channel_messages(document, "productEvents")
    by_name = {m["name"]: m for m in ws.values()}
    reset = payload_validator(document, by_name["reset"])
    assert reset.is_valid({"id": None, "event": "reset", "data": {}})
    assert not reset.is_valid({"id": 7, "event": "reset", "data": {}})
    assert not reset.is_valid({"id": None, "event": "reset", "data": {"x": 1}})
    deleted = payload_validator(document, by_name["product.deleted"])
    assert deleted.is_valid({"id": 9, "event": "product.deleted", "data": {**DELETED}})
    assert not deleted.is_valid({"id": 0, "event": "product.deleted", "data": {**DELETED}})
    assert not deleted.is_valid({"id": 9, "event": "product.created", "data": {**DELETED}})
    [created] = [m for m in sse.values() if m["name"] == "product.created"]
    created_data = payload_validator(document, created)
    assert not created_data.is_valid(DELETED)  # product.created carries the product
    assert created_data.is_valid(created["examples"][0]["payload"])


async def test_the_route_serves_the_document_once_built(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    app.include_router(router)  # what app/main.py does when docs are enabled
    response = await client.get(ASYNCAPI_URL)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == asyncapi_document(app.openapi())
    cached = app.state.asyncapi_document
    again = await client.get(ASYNCAPI_URL)
    assert again.json() == response.json()
    assert app.state.asyncapi_document is cached


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.append(dict(attrs).get("href") or "")


async def test_the_swagger_ui_page_links_the_asyncapi_document(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    links = _Links()
    links.feed(response.text)
    assert ASYNCAPI_URL in links.hrefs
    assert "AsyncAPI" in response.text


def test_the_openapi_document_agrees_on_the_sse_query_parameters(app: FastAPI) -> None:
    """Once the SSE route is in the OpenAPI document, its query parameters are these."""
    item = app.openapi()["paths"].get(SSE_ADDRESS)
    if item is None:
        pytest.skip(f"{SSE_ADDRESS} is not in the OpenAPI document yet")
    declared = {p["name"]: p["schema"] for p in item["get"]["parameters"] if p["in"] == "query"}
    document = asyncapi_document(app.openapi())
    [sse] = [
        op
        for op in document["operations"].values()
        if op["channel"]["$ref"] == "#/channels/productEvents"
    ]
    described = sse["bindings"]["http"]["query"]["properties"]
    assert set(declared) == set(described)
    for name, schema in declared.items():
        assert lowest_integer(schema) == described[name]["minimum"], (name, schema)


def lowest_integer(schema: dict[str, Any]) -> int | None:
    """The least integer a schema allows (`minimum`, or `exclusiveMinimum` as numbers)."""
    for option in [schema, *schema.get("anyOf", [])]:
        if "minimum" in option:
            return math.ceil(option["minimum"])
        if "exclusiveMinimum" in option:
            return math.floor(option["exclusiveMinimum"]) + 1
    return None


# --- the official parser -------------------------------------------------------


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    assert NODE is not None
    return subprocess.run(
        [NODE, str(VALIDATE), str(path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@needs_parser
def test_the_asyncapi_parser_finds_no_error_nor_warning(app: FastAPI, tmp_path: Path) -> None:
    path = tmp_path / "asyncapi.json"
    path.write_text(json.dumps(asyncapi_document(app.openapi())))
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert not [line for line in lines if ": error " in line or ": warning " in line], lines
    # What it does say: AsyncAPI 3.1 exists (the contract asks for 3.0.0).
    assert all("asyncapi-latest-version" in line for line in lines), lines


@needs_parser
@pytest.mark.parametrize(
    ("breakage", "complaint"),
    [
        (lambda d: d.pop("asyncapi"), "asyncapi-is-asyncapi"),
        (
            lambda d: d["operations"]["sendProductEvents"].update(
                channel={"$ref": "#/channels/nowhere"}
            ),
            "'#/channels/nowhere' does not exist",
        ),
        (
            lambda d: d["operations"]["sendProductEvents"]["messages"].append(
                {"$ref": "#/channels/productEventsWebSocket/messages/reset"}
            ),
            "asyncapi3-operation-messages-from-referred-channel",
        ),
        (
            lambda d: d["channels"]["productEventsWebSocket"]["bindings"]["ws"].update(
                method="PUT"
            ),
            "/channels/productEventsWebSocket/bindings/ws/method",
        ),
    ],
    ids=["no-version", "missing-channel", "message-of-another-channel", "bad-binding"],
)
def test_the_asyncapi_parser_rejects_a_broken_copy(
    app: FastAPI, tmp_path: Path, breakage: Any, complaint: str
) -> None:
    document = asyncapi_document(app.openapi())
    breakage(document)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(document))
    result = validate(path)
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if ": error " in line]
    assert any(complaint in line for line in errors), result.stdout


@needs_parser
def test_the_validate_script_without_a_file_is_a_usage_error() -> None:
    assert NODE is not None
    result = subprocess.run(
        [NODE, str(VALIDATE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "usage:" in result.stderr
