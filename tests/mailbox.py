"""A real SMTP server for the tests (aiosmtpd), and reading messages the way a person would."""

import asyncio
import email
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiosmtpd.controller import Controller

from app.core.config import Settings

LINK = re.compile(r"https?://\S+")


def free_port() -> int:
    """A port nothing listens on (once the probe socket is closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class Received:
    sender: str
    recipients: list[str]
    message: Message

    @property
    def body(self) -> str:
        payload = self.message.get_payload(decode=True)
        assert isinstance(payload, bytes)
        return payload.decode()

    @property
    def link(self) -> str:
        """The one link in the message."""
        [link] = LINK.findall(self.body)
        return link

    @property
    def token(self) -> str:
        """The token in the link, as a browser opening it would send it."""
        [token] = parse_qs(urlsplit(self.link).query)["token"]
        return token


class Inbox:
    """An aiosmtpd handler that keeps what it receives.

    `release` holds each message at the DATA stage until it is set, so a test
    can show that the HTTP response went out while the mail was still in
    flight; `refuse_recipients` makes the server answer RCPT with a 550.
    """

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], Message]] = []
        self.release = threading.Event()
        self.release.set()
        self.received = threading.Event()
        self.refuse_recipients = False
        self._lock = threading.Lock()

    async def handle_RCPT(  # the name aiosmtpd calls
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.refuse_recipients:
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # the name aiosmtpd calls
        self, server: Any, session: Any, envelope: Any
    ) -> str:
        await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 10)
        content = envelope.original_content or envelope.content
        with self._lock:
            self.messages.append(
                (envelope.mail_from, list(envelope.rcpt_tos), email.message_from_bytes(content))
            )
        self.received.set()
        return "250 Message accepted for delivery"

    @property
    def received_messages(self) -> list[Received]:
        with self._lock:
            return [Received(*entry) for entry in self.messages]

    def to(self, address: str) -> list[Received]:
        return [m for m in self.received_messages if address in m.recipients]

    def wait_for(self, count: int, *, timeout: float = 10.0) -> list[Received]:
        """The first `count` messages, once that many have arrived (a guard, not a timing)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.messages) >= count:
                return self.received_messages
            time.sleep(0.02)
        raise AssertionError(f"{len(self.messages)} messages arrived, expected {count}")


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server on a free port, and what it received."""
    handler = Inbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        handler.release.set()
        controller.stop()


def smtp_settings(database_url: str, data_dir: Path, port: int, **overrides: Any) -> Settings:
    """Test settings that mail through the SMTP server on `port` (plain, no STARTTLS)."""
    from tests.conftest import make_settings

    values: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_starttls": False,
        "smtp_from": "shop@example.net",
        **overrides,
    }
    return make_settings(database_url, data_dir, **values)
