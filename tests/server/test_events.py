"""Live product events (API 1.1) through the production command: SSE and WebSocket.

Two workers per server, on PostgreSQL and SQLite; two servers on one
database; resume, reset, the owner filter, limits, slow clients, SIGTERM,
the database going away, and commit order under concurrent writers.
"""

import asyncio
import concurrent.futures
import json
import signal
import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.engine import make_url

from app.core.models import utc_now
from app.events.models import EventKind, ProductEvent
from app.events.repository import EventLog
from app.products.models import Product
from tests.conftest import make_settings
from tests.server.conftest import Server, server_environment, start_server, two_servers
from tests.server.test_lifecycle import begin_registration, read_response
from tests.streams import SseStream, WsStream, events_url, ws_url
from tests.support import client_for
from tests.tcp_proxy import TcpProxy

PASSWORD = "an evented passphrase"


# --- Helpers ------------------------------------------------------------------------


class Shopper:
    """A signed-up user who makes changes over plain HTTP."""

    def __init__(self, server: Server, name: str) -> None:
        self.base_url = server.base_url
        body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
        created = httpx.post(f"{self.base_url}/api/v1/users", json=body, timeout=30)
        assert created.status_code == 201, created.text
        self.id: int = created.json()["id"]
        token = httpx.post(
            f"{self.base_url}/api/v1/auth/token",
            data={"username": name, "password": PASSWORD},
            timeout=30,
        )
        assert token.status_code == 200, token.text
        self.headers = {"Authorization": f"Bearer {token.json()['access_token']}"}

    def create(self, name: str, **fields: Any) -> dict[str, Any]:
        body = {"name": name, "price": "9.50", **fields}
        response = httpx.post(
            f"{self.base_url}/api/v1/products", json=body, headers=self.headers, timeout=30
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    def patch(self, product_id: int, **fields: Any) -> dict[str, Any]:
        response = httpx.patch(
            f"{self.base_url}/api/v1/products/{product_id}",
            json=fields,
            headers=self.headers,
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def delete(self, product_id: int) -> None:
        response = httpx.delete(
            f"{self.base_url}/api/v1/products/{product_id}", headers=self.headers, timeout=30
        )
        assert response.status_code == 204, response.text


def as_sequence(stream: SseStream | WsStream, count: int) -> list[tuple[int | None, str, Any]]:
    return [(e.id, e.event, e.data) for e in stream.wait_for(count)]


@pytest.fixture
def streams() -> Iterator[list[SseStream | WsStream]]:
    """Streams a test opens, closed afterwards whatever happened."""
    opened: list[SseStream | WsStream] = []
    yield opened
    for stream in opened:
        stream.close()


def sse(opened: list[SseStream | WsStream], url: str, **headers: str) -> SseStream:
    stream = SseStream(url, headers)
    opened.append(stream)
    assert stream.status == 200, stream.body
    return stream


def ws(opened: list[SseStream | WsStream], url: str) -> WsStream:
    stream = WsStream(url)
    opened.append(stream)
    return stream


# --- The contract -------------------------------------------------------------------


def test_every_stream_sees_every_change_in_one_order(
    server: Server, streams: list[SseStream | WsStream]
) -> None:
    watchers = [sse(streams, events_url(server.base_url)) for _ in range(3)]
    watchers.append(ws(streams, ws_url(server.base_url)))
    alice = Shopper(server, "alice")

    cup = alice.create("Cup", sku="CUP-1")
    plate = alice.create("Plate")
    changed = alice.patch(cup["id"], price="11.00")
    alice.delete(plate["id"])

    expected = [
        ("product.created", {"id": cup["id"], "version": 1, "product": cup}),
        ("product.created", {"id": plate["id"], "version": 1, "product": plate}),
        ("product.updated", {"id": cup["id"], "version": 2, "product": changed}),
        ("product.deleted", {"id": plate["id"], "version": 1, "product": None}),
    ]
    sequences = [as_sequence(watcher, 4) for watcher in watchers]
    assert all(sequence == sequences[0] for sequence in sequences)
    ids = [event_id for event_id, _, _ in sequences[0]]
    assert all(isinstance(i, int) and i > 0 for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == 4
    assert [(name, data) for _, name, data in sequences[0]] == expected
    # What GET says now is what the last event said.
    read = httpx.get(f"{server.base_url}/api/v1/products/{cup['id']}", timeout=10).json()
    assert read == changed


def test_a_stream_has_headers_for_proxies_and_heartbeats(
    database_url: str, tmp_path: Path, streams: list[SseStream | WsStream]
) -> None:
    environment = server_environment(
        database_url, tmp_path / "data", EVENTS_HEARTBEAT_SECONDS="0.5"
    )
    server = start_server(environment, tmp_path / "server.log", workers=1)
    try:
        stream = sse(streams, events_url(server.base_url))
        assert stream.headers is not None
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert "no-store" in stream.headers["cache-control"]
        assert stream.headers["x-accel-buffering"] == "no"
        deadline = time.monotonic() + 10
        while len(stream.comments) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(stream.comments) >= 3, stream.comments
        assert stream.snapshot() == []  # comments only: no event without a change
    finally:
        server.stop()


def test_a_change_that_rolls_back_is_never_an_event(
    server: Server, streams: list[SseStream | WsStream]
) -> None:
    stream = sse(streams, events_url(server.base_url))
    bob = Shopper(server, "bob")
    bob.create("Mug", sku="MUG-1")

    # The same sku again: the insert fails and its transaction rolls back.
    clash = httpx.post(
        f"{server.base_url}/api/v1/products",
        json={"name": "Other mug", "price": "1", "sku": "MUG-1"},
        headers=bob.headers,
        timeout=30,
    )
    assert clash.status_code == 409
    last = bob.create("Saucer")

    events = stream.wait_for(2)
    assert [e.data["product"]["name"] for e in events] == ["Mug", "Saucer"]
    assert events[1].data["id"] == last["id"]
    time.sleep(0.5)
    assert len(stream.snapshot()) == 2


def test_owner_id_limits_a_stream_to_that_owners_products(
    server: Server, streams: list[SseStream | WsStream]
) -> None:
    carol, dave = Shopper(server, "carol"), Shopper(server, "dave")
    mine = sse(streams, events_url(server.base_url, f"?owner_id={carol.id}"))
    mine_ws = ws(streams, ws_url(server.base_url, f"?owner_id={carol.id}"))
    everyone = sse(streams, events_url(server.base_url))

    dave.create("Dave's")
    ours = carol.create("Carol's")
    dave.create("Dave's again")

    everything = everyone.wait_for(3)
    for stream in (mine, mine_ws):
        [only] = stream.wait_for(1)
        assert only.data["product"] == ours
        assert only.id == everything[1].id
    time.sleep(0.3)
    assert len(mine.snapshot()) == len(mine_ws.snapshot()) == 1


def test_deleting_a_user_deletes_their_products_one_event_each(
    server: Server, streams: list[SseStream | WsStream]
) -> None:
    erin = Shopper(server, "erin")
    products = [erin.create(f"Erin's {n}") for n in range(3)]
    stream = sse(streams, events_url(server.base_url))

    gone = httpx.delete(f"{server.base_url}/api/v1/users/me", headers=erin.headers, timeout=30)

    assert gone.status_code == 204
    events = stream.wait_for(3)
    assert {(e.event, e.data["id"], e.data["product"]) for e in events} == {
        ("product.deleted", p["id"], None) for p in products
    }


def test_resume_gets_every_event_after_the_id_then_the_live_ones(
    server: Server, streams: list[SseStream | WsStream]
) -> None:
    frank = Shopper(server, "frank")
    first = sse(streams, events_url(server.base_url))
    made = [frank.create(f"Item {n}") for n in range(5)]
    seen = first.wait_for(5)
    middle = seen[1].id
    assert middle is not None

    by_header = sse(streams, events_url(server.base_url), **{"Last-Event-ID": str(middle)})
    by_query = sse(streams, events_url(server.base_url, f"?last_event_id={middle}"))
    by_ws = ws(streams, ws_url(server.base_url, f"?last_event_id={middle}"))
    later = frank.create("Later")

    expected = [e.id for e in seen[2:]] + [first.wait_for(6)[5].id]
    for stream in (by_header, by_query, by_ws):
        events = stream.wait_for(4)
        assert [e.id for e in events] == expected
        assert events[-1].data["product"] == later
        assert events[0].data["product"] == made[2]
    time.sleep(0.3)
    assert all(len(s.snapshot()) == 4 for s in (by_header, by_query, by_ws))


def test_resuming_from_an_id_no_longer_kept_begins_with_reset(
    server: Server,
    streams: list[SseStream | WsStream],
    database_url: str,
    tmp_path: Path,
    run_app: Any,
) -> None:
    gina = Shopper(server, "gina")
    watcher = sse(streams, events_url(server.base_url))
    for n in range(3):
        gina.create(f"Old {n}")
    old = watcher.wait_for(3)
    # An hour and more later: `python -m app purge` drops what is past retention.
    asyncio.run(_age_events(database_url, tmp_path, hours=2))
    purged = run_app(
        "-m", "app", "purge", DATABASE_URL=database_url, DATA_DIR=str(tmp_path / "cli")
    )
    assert purged.returncode == 0, purged.stderr
    assert "product events" in purged.stdout + purged.stderr

    resumed = sse(streams, events_url(server.base_url), **{"Last-Event-ID": str(old[0].id)})
    unknown = ws(streams, ws_url(server.base_url, "?last_event_id=999999"))
    fresh = gina.create("New")

    for stream in (resumed, unknown):
        reset, live = stream.wait_for(2)
        assert (reset.id, reset.event, reset.data) == (None, "reset", {})
        assert live.data["product"] == fresh
        assert live.id == watcher.wait_for(4)[3].id


async def _age_events(database_url: str, tmp_path: Path, hours: int) -> None:
    settings = make_settings(database_url, tmp_path / "probe")
    async with client_for(settings) as (app, _), app.state.database.engine.begin() as connection:
        aged = await connection.execute(
            update(ProductEvent)
            .where(ProductEvent.position.is_not(None))
            .values(published_at=utc_now() - timedelta(hours=hours))
        )
        assert aged.rowcount > 0


def test_bad_parameters_get_a_problem_or_close_1008(server: Server) -> None:
    for query, header in (("?owner_id=0", None), ("?last_event_id=-1", None), ("", "abc")):
        headers = {"Last-Event-ID": header} if header else {}
        response = httpx.get(events_url(server.base_url, query), headers=headers, timeout=10)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"]

    stream = WsStream(ws_url(server.base_url, "?owner_id=zero"))
    assert stream.ended.wait(10)
    assert stream.close_code == 1008
    assert "owner_id" in stream.close_reason


# --- Limits ------------------------------------------------------------------------------


def test_a_worker_at_its_limit_answers_503_and_closes_websockets_1013(
    database_url: str, tmp_path: Path, streams: list[SseStream | WsStream]
) -> None:
    environment = server_environment(database_url, tmp_path / "data", EVENTS_MAX_CLIENTS="2")
    server = start_server(environment, tmp_path / "server.log", workers=1)
    try:
        sse(streams, events_url(server.base_url))
        ws(streams, ws_url(server.base_url))

        refused = httpx.get(events_url(server.base_url), timeout=10)
        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/problem+json"
        assert int(refused.headers["retry-after"]) > 0
        turned_away = WsStream(ws_url(server.base_url))
        assert turned_away.ended.wait(10)
        assert turned_away.close_code == 1013

        streams.pop().close()  # one slot free again
        time.sleep(0.3)
        sse(streams, events_url(server.base_url))
    finally:
        server.stop()


def test_a_client_that_cannot_keep_up_is_dropped_and_the_others_get_everything(
    database_url: str, tmp_path: Path, backend: str, streams: list[SseStream | WsStream]
) -> None:
    if backend != "postgresql":
        pytest.skip("one backend suffices: the buffers are the same code on both")
    environment = server_environment(database_url, tmp_path / "data", EVENTS_CLIENT_BUFFER="600")
    server = start_server(environment, tmp_path / "server.log", workers=1)
    host, port = server.base_url.removeprefix("http://").split(":")
    try:
        steady = sse(streams, events_url(server.base_url))
        # A client that sends its request, then never reads a byte.
        stuck = socket.create_connection((host, int(port)))
        stuck.sendall(b"GET /api/v1/products/events HTTP/1.1\r\nHost: test\r\n\r\n")
        time.sleep(0.5)
        assert _open_streams(server) == 2
        # 3,000 events of ~4 kB: far more than the stuck client's socket buffers
        # and its 600 events of buffer hold; the hub hands them out 500 at a time.
        asyncio.run(_write_events(database_url, tmp_path, count=3000, size=4000))

        events = steady.wait_for(3000, timeout=60)
        first = events[0].id or 0
        assert [e.id for e in events] == list(range(first, first + 3000))
        # The stuck client's stream is over on the server's side (its last send
        # gives up after 10 s); the steady one goes on.
        deadline = time.monotonic() + 30
        while _open_streams(server) != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _open_streams(server) == 1
        metrics = httpx.get(f"{server.base_url}/metrics", timeout=10).text
        assert "events_clients_dropped_total 1.0" in metrics
        assert not steady.ended.is_set()
        stuck.close()
    finally:
        server.stop()


def _open_streams(server: Server) -> float:
    metrics = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    for line in metrics.splitlines():
        if line.startswith('events_streams_open{transport="sse"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _write_events(database_url: str, tmp_path: Path, *, count: int, size: int) -> None:
    """Events as a change writes them, without the changes: for volume."""
    settings = make_settings(database_url, tmp_path / "writer")
    async with client_for(settings) as (app, _), app.state.database.sessionmaker.begin() as session:
        log = EventLog(session)
        filler = "x" * size
        for n in range(count):
            log._add(EventKind.UPDATED, n + 1, 1, 1, json.dumps({"filler": filler}))
    # The server's relay publishes them on its next sweep (within a second).


# --- Shutdown ------------------------------------------------------------------------------


def test_sigterm_ends_open_streams_at_once_and_answers_requests_in_flight(
    database_url: str, tmp_path: Path, streams: list[SseStream | WsStream]
) -> None:
    environment = server_environment(database_url, tmp_path / "data", GRACEFUL_TIMEOUT="30")
    server = start_server(environment, tmp_path / "server.log")
    event_stream = sse(streams, events_url(server.base_url))
    socket_stream = ws(streams, ws_url(server.base_url))
    connection, rest = begin_registration(server, "inflight")
    with connection:
        time.sleep(0.5)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)

        assert event_stream.ended.wait(5)
        assert event_stream.error is None
        assert socket_stream.ended.wait(5)
        assert socket_stream.close_code == 1001
        connection.sendall(rest)
        status, _, payload = read_response(connection)

    assert status == 201, payload
    assert server.process.wait(timeout=15) == 0
    assert time.monotonic() - started < 10  # not GRACEFUL_TIMEOUT's 30 seconds


# --- Scale-out and outages ----------------------------------------------------------------


def test_two_servers_behave_as_one_stream(
    database_url: str, tmp_path: Path, streams: list[SseStream | WsStream]
) -> None:
    environment = server_environment(database_url, tmp_path / "data")
    with two_servers(environment, tmp_path) as (first, second):
        watchers = [
            sse(streams, events_url(first.base_url)),
            sse(streams, events_url(second.base_url)),
            ws(streams, ws_url(first.base_url)),
            ws(streams, ws_url(second.base_url)),
        ]
        writers = [Shopper(first, "hank"), Shopper(second, "iris")]

        def write(n: int) -> None:
            writers[n % 2].create(f"Thing {n}")

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(write, range(40)))

        sequences = [[e.id for e in w.wait_for(40)] for w in watchers]
        assert all(sequence == sequences[0] for sequence in sequences)
        first_id = sequences[0][0] or 0
        assert sequences[0] == list(range(first_id, first_id + 40))
        names = {e.data["product"]["name"] for e in watchers[0].wait_for(40)}
        assert names == {f"Thing {n}" for n in range(40)}


async def test_commit_order_holds_with_concurrent_writers_and_a_long_transaction(
    server: Server,
    backend: str,
    database_url: str,
    tmp_path: Path,
    streams: list[SseStream | WsStream],
) -> None:
    """An event written first but committed last comes last: ids follow commit order."""
    if backend != "postgresql":
        pytest.skip("on SQLite a transaction held open holds back every other writer")
    watcher = sse(streams, events_url(server.base_url))
    writers = [Shopper(server, f"writer{n}") for n in range(20)]
    settings = make_settings(database_url, tmp_path / "held")
    # A transaction that writes its event before everyone else, and commits after them.
    async with client_for(settings) as (app, _), app.state.database.sessionmaker() as held:
        product = Product(name="Held", price=1, owner_id=writers[0].id)
        held.add(product)
        await held.flush()
        EventLog(held).product_changed(EventKind.CREATED, product)
        await held.flush()

        # 20 writers at once, each committing while the held transaction is open.
        loop = asyncio.get_running_loop()
        with concurrent.futures.ThreadPoolExecutor(len(writers)) as pool:
            await asyncio.gather(
                *(
                    loop.run_in_executor(pool, writer.create, f"By {n}")
                    for n, writer in enumerate(writers)
                )
            )
        before = await asyncio.to_thread(watcher.wait_for, 20)
        await held.commit()

    events = await asyncio.to_thread(watcher.wait_for, 21)
    assert events[:20] == before
    assert events[20].data["product"]["name"] == "Held"
    ids = [e.id or 0 for e in events]
    assert ids == list(range(ids[0], ids[0] + 21))
    # A resume from before all of them sees the same sequence.
    replay = sse(streams, events_url(server.base_url, f"?last_event_id={ids[0] - 1}"))
    assert [e.id for e in await asyncio.to_thread(replay.wait_for, 21)] == ids


@pytest.fixture
async def proxied_server(backend: str, database_url: str, tmp_path: Path) -> Any:
    if backend != "postgresql":
        pytest.skip("SQLite is a file, not a server one can be cut off from")
    url = make_url(database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    environment = server_environment(proxied, tmp_path / "data")
    server = await asyncio.to_thread(start_server, environment, tmp_path / "proxied.log")
    yield proxy, server
    await asyncio.to_thread(server.stop)
    await proxy.close()


async def test_streams_survive_a_database_outage_and_lose_nothing(
    proxied_server: tuple[TcpProxy, Server],
    database_url: str,
    tmp_path: Path,
    streams: list[SseStream | WsStream],
) -> None:
    proxy, cut_off = proxied_server
    environment = server_environment(database_url, tmp_path / "direct")
    direct = await asyncio.to_thread(start_server, environment, tmp_path / "direct.log")
    try:
        watchers = [
            await asyncio.to_thread(sse, streams, events_url(cut_off.base_url)),
            await asyncio.to_thread(ws, streams, ws_url(cut_off.base_url)),
        ]
        jack = await asyncio.to_thread(Shopper, direct, "jack")
        await asyncio.to_thread(jack.create, "Before")
        for watcher in watchers:
            await asyncio.to_thread(watcher.wait_for, 1)

        await proxy.refuse()  # the database goes away for the first server
        for n in range(3):
            await asyncio.to_thread(jack.create, f"During {n}")
        await asyncio.sleep(2)
        await proxy.restore()
        await asyncio.to_thread(jack.create, "After")

        for watcher in watchers:
            events = await asyncio.to_thread(watcher.wait_for, 5, 30)
            assert [e.data["product"]["name"] for e in events] == [
                "Before",
                "During 0",
                "During 1",
                "During 2",
                "After",
            ]
            assert not watcher.ended.is_set()
    finally:
        await asyncio.to_thread(direct.stop)
