"""Mail delivery with the production command and the mail worker, as processes.

API.md 1.1 "Mail delivery": every message is sent once, by one process,
whichever worker or replica wrote it; a sender that dies mid-send leaves the
message to another; requests never wait for SMTP, and a hanging SMTP server
does not slow them down. And the no-oracle rule of password reset, timed
from outside: known and unknown addresses are answered in about the same time.
"""

import asyncio
import concurrent.futures
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from app.mail.models import MessageStatus, OutboxMessage
from tests.conftest import make_settings
from tests.mailbox import Inbox, free_port
from tests.server.conftest import (
    PROJECT_ROOT,
    Server,
    server_environment,
    start_server,
    two_servers,
)
from tests.support import DatabaseProbe, client_for, register

PASSWORD = "correct horse battery"


def smtp_environment(port: int, **extra: str) -> dict[str, str]:
    return {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(port),
        "SMTP_STARTTLS": "false",
        "SMTP_FROM": "shop@example.net",
        **extra,
    }


def post(server: Server, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}{path}", json=body, headers={"Connection": "close"}, timeout=30
    )


def sign_up(server: Server, name: str) -> None:
    body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    response = post(server, "/api/v1/users", body)
    assert response.status_code == 201, response.text


async def outbox(database_url: str, tmp_path: Path) -> list[OutboxMessage]:
    async with client_for(make_settings(database_url, tmp_path / "probe")) as (app, _):
        db = DatabaseProbe(app.state.database)
        return list(await db.all(select(OutboxMessage).order_by(OutboxMessage.id)))


@pytest.fixture
def replicas_with_smtp(
    database_url: str, tmp_path: Path, inbox: tuple[Inbox, int]
) -> Iterator[tuple[Server, Server]]:
    _, port = inbox
    environment = server_environment(database_url, tmp_path / "data", **smtp_environment(port))
    with two_servers(environment, tmp_path) as servers:
        yield servers


async def test_two_servers_send_every_message_exactly_once(
    replicas_with_smtp: tuple[Server, Server],
    inbox: tuple[Inbox, int],
    database_url: str,
    tmp_path: Path,
) -> None:
    handler, _ = inbox
    servers = replicas_with_smtp
    names = [f"user{n}" for n in range(240)]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: sign_up(servers[n % 2], names[n]), range(len(names))))

    handler.wait_for(len(names), timeout=60)
    await asyncio.sleep(1.0)  # a second copy, had there been one, would be here by now
    received = handler.received_messages
    assert len(received) == len(names)
    ids = [message.message["Message-ID"] for message in received]
    assert len(set(ids)) == len(names)
    assert sorted(r for m in received for r in m.recipients) == sorted(
        f"{name}@example.com" for name in names
    )
    rows = await outbox(database_url, tmp_path)
    assert {row.status for row in rows} == {MessageStatus.SENT}
    assert sorted(row.message_id for row in rows) == sorted(ids)
    # Both servers' workers did some of the sending.
    senders = {
        record["pid"]
        for server in servers
        for record in server.log_records()
        if record.get("message", "").startswith("sent message")
    }
    assert len(senders) >= 2


class StallFirst(Inbox):
    """Holds the first message at DATA until released, then refuses it (451): the client
    that sent it is gone by then. Every later message is taken."""

    def __init__(self) -> None:
        super().__init__()
        self.stalled = threading.Event()
        self.release.clear()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if not self.stalled.is_set():
            self.stalled.set()
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 30)
            return "451 4.3.0 try again later"
        return await super().handle_DATA(server, session, envelope)


def start_worker(environment: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log = log_path.open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "app", "worker"],
        cwd=PROJECT_ROOT,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_worker_killed_mid_send_leaves_the_message_to_another(
    database_url: str, tmp_path: Path
) -> None:
    handler = StallFirst()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    environment = server_environment(
        database_url,
        tmp_path / "data",
        **smtp_environment(
            port,
            MAIL_DISPATCHER="worker",
            SMTP_TIMEOUT="2",
            MAIL_LEASE_SECONDS="4",
            MAIL_POLL_SECONDS="0.2",
        ),
    )
    settings = make_settings(database_url, tmp_path / "api", mail_dispatcher="worker")
    first = start_worker(environment, tmp_path / "first.log")
    second = None
    try:
        async with client_for(settings) as (_, client):
            assert (await register(client, "carol")).status_code == 201
        await asyncio.to_thread(wait_until, handler.stalled.is_set, 20, "the first send")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        handler.release.set()  # the dead sender's message is refused, never counted

        second = start_worker(environment, tmp_path / "second.log")
        await asyncio.to_thread(wait_until, lambda: handler.messages, 20, "the second send")
        await asyncio.sleep(0.5)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(10)
        controller.stop()

    [received] = handler.received_messages
    assert received.recipients == ["carol@example.com"]
    [row] = await outbox(database_url, tmp_path)
    assert row.status == MessageStatus.SENT
    assert row.attempts == 2
    assert received.message["Message-ID"] == row.message_id
    assert second is not None
    assert second.returncode == 0


async def test_the_worker_sends_at_once_and_stops_on_sigterm(
    database_url: str, tmp_path: Path, inbox: tuple[Inbox, int], backend: str
) -> None:
    """On PostgreSQL it is woken by NOTIFY (its timer here is far too slow to explain the
    delivery); on SQLite it polls."""
    handler, port = inbox
    poll = "60" if backend == "postgresql" else "0.2"
    environment = server_environment(
        database_url,
        tmp_path / "data",
        **smtp_environment(port, MAIL_DISPATCHER="worker", MAIL_POLL_SECONDS=poll),
    )
    worker = start_worker(environment, tmp_path / "worker.log")
    try:
        await asyncio.to_thread(
            wait_until,
            lambda: "mail worker started" in (tmp_path / "worker.log").read_text(),
            30,
            "the worker",
        )
        await asyncio.sleep(0.5)  # its listener connects
        settings = make_settings(database_url, tmp_path / "api", mail_dispatcher="worker")
        async with client_for(settings) as (_, client):
            for name in ("carol", "dave"):
                assert (await register(client, name)).status_code == 201
        await asyncio.to_thread(handler.wait_for, 2, timeout=20)
        heartbeat = tmp_path / "data" / "mail-worker.alive"
        assert time.time() - heartbeat.stat().st_mtime < 60
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(15)
    assert code == 0
    assert "mail worker stopped" in (tmp_path / "worker.log").read_text()
    assert sorted(r for m in handler.received_messages for r in m.recipients) == [
        "carol@example.com",
        "dave@example.com",
    ]


def timed_get(server: Server, path: str) -> float:
    started = time.perf_counter()
    response = httpx.get(f"{server.base_url}{path}", timeout=30)
    assert response.status_code == 200
    return time.perf_counter() - started


def test_a_hanging_smtp_server_slows_no_request(database_url: str, tmp_path: Path) -> None:
    with socket.socket() as silent:
        # Accepts connections (into the kernel's backlog) and never says a word.
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        port = silent.getsockname()[1]
        environment = server_environment(
            database_url, tmp_path / "data", **smtp_environment(port, SMTP_TIMEOUT="5")
        )
        server = start_server(environment, tmp_path / "server.log")
        try:
            for _ in range(5):  # warm up both workers' pools
                timed_get(server, "/api/v1/products")
            calm = [timed_get(server, "/api/v1/products") for _ in range(40)]

            started = time.perf_counter()
            for n in range(8):
                sign_up(server, f"user{n}")
            registering = time.perf_counter() - started
            # Eight sends now hang for 5 s each in the workers' background.
            during = [timed_get(server, "/api/v1/products") for _ in range(40)]
            hung = time.perf_counter() - started
        finally:
            server.stop()

    # The sign-ups did not wait for SMTP (5 s each), and the reads ran while it hung.
    assert registering < 4, registering
    assert hung < 5, "the reads were not measured while SMTP hung"
    assert statistics.median(during) <= 3 * statistics.median(calm) + 0.02, (calm, during)


def test_a_reset_takes_as_long_for_an_unknown_address_as_for_a_known_one(
    database_url: str, tmp_path: Path, inbox: tuple[Inbox, int]
) -> None:
    handler, port = inbox
    environment = server_environment(
        database_url,
        tmp_path / "data",
        **smtp_environment(port, PASSWORD_RESET_MAX_PER_HOUR="1000"),
    )
    server = start_server(environment, tmp_path / "server.log")
    try:
        for n in range(4):
            sign_up(server, f"known{n}")
        handler.wait_for(4, timeout=20)
        times: dict[str, list[float]] = {"known": [], "unknown": []}
        bodies = set()
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            for n in range(60):
                kind = ("known", "unknown")[n % 2]
                email = f"{kind}{(n // 2) % 4}@example.com"
                started = time.perf_counter()
                response = client.post("/api/v1/auth/password-reset", json={"email": email})
                times[kind].append(time.perf_counter() - started)
                assert response.status_code == 202
                bodies.add(response.text)
        # Each known address is mailed (a request superseded by a newer one
        # before its turn is not: only the newest link would work anyway).
        await_each = [f"known{n}@example.com" for n in range(4)]
        wait_until(lambda: all(len(handler.to(a)) >= 2 for a in await_each), 30, "the resets")
    finally:
        server.stop()

    assert len(bodies) == 1
    known, unknown = statistics.median(times["known"]), statistics.median(times["unknown"])
    # Generous: the same statements run either way; only noise tells them apart.
    assert known <= 2 * unknown + 0.01, (known, unknown)
    assert unknown <= 2 * known + 0.01, (known, unknown)
    mailed = {r for m in handler.received_messages[4:] for r in m.recipients}
    assert mailed == set(await_each)  # the known addresses were really mailed, no other
