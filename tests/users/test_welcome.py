"""The welcome message after registration, and what registration leaves in the log.

Covers the Users section of API.md: after registration a welcome message is
sent in the background, after the response; by default it is written to the
log, with SMTP settings it is mailed (here to a real local SMTP server), and
a failure to send never fails the registration. Also: a password or its
hash never appears in a log line.
"""

import asyncio
import io
import json
import logging
import socket
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.core.config import Settings
from tests.mailbox import Inbox, free_port, smtp_settings
from tests.support import (
    DatabaseProbe,
    assert_problem,
    bearer,
    client_for,
    login,
    service_logging,
)
from tests.users.common import stored_user, user_count

URL = "/api/v1/users"
PASSWORD = "a rather memorable passphrase"
CAROL = {
    "username": "carol",
    "email": "carol@example.com",
    "password": PASSWORD,
    "full_name": "Carol Danvers",
}


def app_with_smtp(
    database_url: str, tmp_path: Path, port: int, **overrides: Any
) -> AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]:
    """An app (with a client) that mails the welcome through the SMTP server on `port`."""
    return client_for(smtp_settings(database_url, tmp_path / "smtp-data", port, **overrides))


@pytest.fixture
def debug_log(settings: Settings) -> Iterator[io.StringIO]:
    """The service's own logging at LOG_LEVEL=DEBUG, written into a buffer."""
    with service_logging(
        settings.model_copy(update={"log_level": "DEBUG", "log_format": "json"})
    ) as buffer:
        yield buffer


def notification_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The messages written to the log (no SMTP configured)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "app.mail" and r.getMessage().startswith("message for ")
    ]


async def test_by_default_the_welcome_message_is_written_to_the_log(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    response = await client.post(URL, json=CAROL)

    assert response.status_code == 201, response.text
    lines = notification_lines(caplog)
    assert len(lines) == 1, lines
    assert "carol@example.com" in lines[0]
    assert "Hello carol" in lines[0]
    assert "Welcome" in lines[0]


async def test_each_registration_gets_its_own_welcome(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for name in ("carol", "dave"):
        body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
        assert (await client.post(URL, json=body)).status_code == 201

    lines = notification_lines(caplog)
    assert len(lines) == 2
    assert "carol@example.com" in lines[0]
    assert "dave@example.com" in lines[1]


async def test_a_refused_registration_sends_no_welcome(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    assert (await client.post(URL, json=CAROL)).status_code == 201
    caplog.set_level(logging.INFO)
    caplog.clear()

    duplicate = await client.post(URL, json={**CAROL, "email": "carol2@example.com"})
    invalid = await client.post(URL, json={**CAROL, "username": "x"})

    assert_problem(duplicate, 409)
    assert_problem(invalid, 422)
    assert notification_lines(caplog) == []


async def test_no_log_line_shows_a_password_or_its_hash(
    client: httpx.AsyncClient, db: DatabaseProbe, debug_log: io.StringIO
) -> None:
    new_password = "an entirely new passphrase"
    wrong_guess = "a wrong guess at it"

    created = await client.post(URL, json=CAROL)
    assert created.status_code == 201
    first_hash = (await stored_user(db, created.json()["id"])).password_hash
    assert_problem(await client.post(URL, json={**CAROL, "email": "other@example.com"}), 409)
    assert_problem(await client.post(URL, json={**CAROL, "username": "bad name"}), 422)
    assert_problem(await login(client, "carol", wrong_guess), 400)
    tokens = (await login(client, "carol", PASSWORD)).json()
    headers = bearer(tokens["access_token"])
    wrong_current = await client.post(
        URL + "/me/password",
        json={"current_password": wrong_guess, "new_password": new_password},
        headers=headers,
    )
    assert_problem(wrong_current, 403)
    changed = await client.post(
        URL + "/me/password",
        json={"current_password": PASSWORD, "new_password": new_password},
        headers=headers,
    )
    assert changed.status_code == 204
    second_hash = (await stored_user(db, created.json()["id"])).password_hash

    logged = debug_log.getvalue()
    assert "POST /api/v1/users" in logged, "expected the requests to be logged"
    assert "Hello carol" in logged
    for secret in (PASSWORD, new_password, wrong_guess, first_hash, second_hash):
        assert secret not in logged
    assert "$argon2" not in logged


async def test_with_smtp_settings_the_welcome_is_mailed(
    database_url: str, tmp_path: Path, inbox: tuple[Inbox, int]
) -> None:
    handler, port = inbox
    async with app_with_smtp(database_url, tmp_path, port) as (_, client):
        response = await client.post(URL, json=CAROL)

    assert response.status_code == 201, response.text
    assert handler.received.wait(5)
    assert len(handler.messages) == 1
    sender, recipients, message = handler.messages[0]
    assert recipients == ["carol@example.com"]
    assert sender == "shop@example.net"
    assert message["To"] == "carol@example.com"
    assert message["Subject"].startswith("Welcome")
    assert message["Message-ID"].endswith("@example.net>")
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert b"carol" in body
    assert PASSWORD.encode() not in body


async def test_the_response_does_not_wait_for_the_mail(
    database_url: str, tmp_path: Path, inbox: tuple[Inbox, int]
) -> None:
    """Drives the ASGI app directly: httpx's transport would wait for the background task."""
    handler, port = inbox
    handler.release.clear()  # the SMTP server holds the message until told otherwise
    payload = json.dumps(CAROL).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": URL,
        "raw_path": URL.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    request_sent = False
    disconnected = asyncio.Event()
    response_started: dict[str, Any] = {}
    response_complete = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            response_started.update(message)
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            response_complete.set()

    async with app_with_smtp(database_url, tmp_path, port) as (app, _):
        call = asyncio.create_task(app(scope, receive, send))
        try:
            await asyncio.wait_for(response_complete.wait(), timeout=10)
            assert response_started["status"] == 201
            assert not handler.received.is_set()
            assert not call.done(), "the application finished before the mail was delivered"
        finally:
            handler.release.set()
            disconnected.set()
            await asyncio.wait_for(call, timeout=15)

    assert handler.received.is_set()
    assert handler.messages[0][1] == ["carol@example.com"]


async def test_an_unreachable_smtp_server_does_not_fail_registration(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    closed_port = free_port()
    async with app_with_smtp(database_url, tmp_path, closed_port) as (app, client):
        response = await client.post(URL, json=CAROL)

        assert response.status_code == 201, response.text
        assert response.headers["location"] == f"/api/v1/users/{response.json()['id']}"
        db = DatabaseProbe(app.state.database)
        assert await user_count(db) == 1
        assert (await login(client, "carol", PASSWORD)).status_code == 200

    warnings = [r for r in caplog.records if r.name == "app.mail" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "carol@example.com" in warnings[0].getMessage()


async def test_an_smtp_server_refusing_the_recipient_does_not_fail_registration(
    database_url: str, tmp_path: Path, inbox: tuple[Inbox, int]
) -> None:
    handler, port = inbox
    handler.refuse_recipients = True
    async with app_with_smtp(database_url, tmp_path, port) as (app, client):
        response = await client.post(URL, json=CAROL)

        assert response.status_code == 201, response.text
        assert await user_count(DatabaseProbe(app.state.database)) == 1
    assert handler.messages == []


async def test_an_smtp_server_that_never_answers_does_not_fail_registration(
    database_url: str, tmp_path: Path
) -> None:
    with socket.socket() as silent:
        # Accepts connections (in the kernel's backlog) but never says hello.
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        async with app_with_smtp(database_url, tmp_path, port, smtp_timeout=0.5) as (app, client):
            response = await client.post(URL, json=CAROL)

            assert response.status_code == 201, response.text
            assert await user_count(DatabaseProbe(app.state.database)) == 1
