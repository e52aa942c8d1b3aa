"""OWASP API7:2023 Server Side Request Forgery, applied to this service.

SSRF needs a server that fetches a resource named by the client: a webhook,
an avatar URL, a document to import. This service has no such feature. No
request field is a URL or a host; text fields that may hold a URL (a full
name, a product's name or description, the search text) are stored and
returned as text. The only outgoing connections are to the database and,
for the mail outbox, to the SMTP server named in the settings; neither
address comes from a request, and the mail goes to the configured server
whatever the recipient's domain. The URLs in settings that name links
(PUBLIC_URL and the link templates) are written into messages, never
fetched. `Location` headers are paths, so a forged
`Host` cannot point them elsewhere.

The tests check the facts that make the risk absent: the application code
imports no HTTP or socket client (only `aiosmtplib`, in the mail
transport); the OpenAPI document declares no URL-shaped input; and URLs sent
in every text field, query and header, pointing at a local listener, are
stored verbatim while the listener sees no connection at all.
"""

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.products.models import Product
from app.users.models import User
from tests.conftest import make_settings
from tests.security.common import (
    APP_ROOT,
    SMTP_ONLY,
    network_use,
    operations,
    resolve,
    walk_schemas,
)
from tests.support import Account, DatabaseProbe, client_for

URL_FORMATS = {"uri", "url", "iri", "uri-reference", "iri-reference", "hostname", "ipv4", "ipv6"}
URL_NAMES = re.compile(r"url|uri|link|href|callback|webhook|hook|avatar|image|host|redirect|fetch")


@dataclass
class Listener:
    """A TCP server on localhost that counts the connections made to it."""

    port: int = 0
    connections: int = 0
    received: list[bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/internal/admin?x=1"


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    state = Listener()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        state.received.append(await reader.read(1024))
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    async with server:
        yield state


def test_the_only_network_client_in_the_code_is_smtp_for_the_outbox() -> None:
    assert network_use(APP_ROOT) == SMTP_ONLY


async def test_no_request_input_is_declared_as_a_url_or_host(app: FastAPI) -> None:
    document = app.openapi()
    for op in operations(app):
        inputs: list[tuple[str, dict[str, Any]]] = [
            (parameter["name"], parameter["schema"]) for parameter in op.spec.get("parameters", [])
        ]
        for content in op.spec.get("requestBody", {}).get("content", {}).values():
            body = resolve(document, content["schema"])
            inputs += [(name, schema) for name, schema in body.get("properties", {}).items()]
        for name, schema in inputs:
            assert not URL_NAMES.search(name.lower()), (op.key, name)
            for nested in walk_schemas(document, schema):
                assert nested.get("format") not in URL_FORMATS, (op.key, name)


async def test_urls_sent_anywhere_are_kept_as_text_and_never_fetched(
    client: httpx.AsyncClient, db: DatabaseProbe, user: Account, listener: Listener
) -> None:
    url = listener.url
    hostile_headers = {
        "X-Forwarded-Host": f"127.0.0.1:{listener.port}",
        "Forwarded": f"host=127.0.0.1:{listener.port}",
        "Referer": url,
        "Origin": url,
        "X-Original-URL": url,
        "X-Rewrite-URL": url,
    }
    registered = await client.post(
        "/api/v1/users",
        json={
            "username": "carol",
            "email": "carol@example.com",
            "password": "long enough!",
            "full_name": url,
        },
        headers=hostile_headers,
    )
    patched = await client.patch(
        "/api/v1/users/me", json={"full_name": url}, headers={**user.headers, **hostile_headers}
    )
    created = await client.post(
        "/api/v1/products",
        json={"name": url[:200], "description": f"See {url}", "price": 1},
        headers={**user.headers, **hostile_headers},
    )
    product_url = f"/api/v1/products/{created.json()['id']}"
    replaced = await client.put(
        product_url, json={"name": "Cup", "description": url, "price": 1}, headers=user.headers
    )
    searched = await client.get("/api/v1/products", params={"q": url[:100]})

    for response in (registered, patched, created, replaced, searched):
        assert response.status_code < 300, response.text
    assert registered.json()["full_name"] == url
    assert patched.json()["full_name"] == url
    assert replaced.json()["description"] == url
    assert searched.json()["total"] == 1
    stored_user = await db.get(User, user.id)
    stored_product = await db.get(Product, created.json()["id"])
    assert stored_user is not None
    assert stored_product is not None
    assert stored_user.full_name == url
    assert stored_product.description == url

    await asyncio.sleep(0.3)  # time for any stray connection attempt to arrive
    assert listener.connections == 0, listener.received


async def test_with_smtp_configured_only_the_configured_server_is_contacted(
    database_url: str, tmp_path: Path, listener: Listener
) -> None:
    """The mail goes to SMTP_HOST, never to a host taken from the recipient or the body."""
    smtp = Listener()
    smtp_connected = asyncio.Event()

    async def speak_smtp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        smtp.connections += 1
        smtp_connected.set()
        # Refused at once: this test is only about which server is called.
        writer.write(b"554 not today\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(speak_smtp, "127.0.0.1", 0)
    smtp.port = server.sockets[0].getsockname()[1]
    settings = make_settings(
        database_url, tmp_path / "smtp", smtp_host="127.0.0.1", smtp_port=smtp.port
    )
    async with server, client_for(settings) as (_, client):
        response = await client.post(
            "/api/v1/users",
            json={
                "username": "carol",
                "email": "carol@mail.attacker.example.com",
                "password": "long enough!",
                "full_name": listener.url,
            },
        )
        assert response.status_code == 201, response.text
        await asyncio.wait_for(smtp_connected.wait(), 10)

    assert smtp.connections == 1
    assert listener.connections == 0


async def test_location_is_a_path_whatever_host_the_request_names(
    client: httpx.AsyncClient, user: Account, listener: Listener
) -> None:
    forged = {"Host": f"127.0.0.1:{listener.port}", "X-Forwarded-Host": "evil.example"}
    registered = await client.post(
        "/api/v1/users",
        json={"username": "carol", "email": "carol@example.com", "password": "long enough!"},
        headers=forged,
    )
    created = await client.post(
        "/api/v1/products", json={"name": "Cup", "price": 1}, headers={**user.headers, **forged}
    )

    assert registered.headers["location"] == f"/api/v1/users/{registered.json()['id']}"
    assert created.headers["location"] == f"/api/v1/products/{created.json()['id']}"
    assert listener.connections == 0


async def test_the_docs_page_does_not_load_a_spec_named_in_its_url(
    client: httpx.AsyncClient, listener: Listener
) -> None:
    plain = await client.get("/docs")
    steered = await client.get("/docs", params={"url": listener.url, "configUrl": listener.url})
    script = await client.get("/static/app/swagger-init.js")

    assert steered.text == plain.text
    assert str(listener.port) not in steered.text
    assert "queryConfigEnabled" not in script.text  # Swagger UI then ignores ?url= (default)
    assert listener.connections == 0
