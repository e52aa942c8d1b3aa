"""Clients of the live event streams, as browsers and scripts use them: SSE and WebSocket.

Each reads in a thread of its own into a list, so a test can make changes
meanwhile and then wait for what arrived (a guard with a deadline, not a
timing).
"""

import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect


@dataclass(frozen=True)
class Received:
    id: int | None
    event: str
    data: Any


class _Reader:
    def __init__(self) -> None:
        self.events: list[Received] = []
        self.comments: list[str] = []
        self.ended = threading.Event()  # the server ended the stream
        self.opened = threading.Event()
        self.error: BaseException | None = None
        self._lock = threading.Lock()

    def _add(self, received: Received) -> None:
        with self._lock:
            self.events.append(received)

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.events)

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """The first `count` events, once that many have arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self.snapshot()
            if len(events) >= count:
                return events[:count]
            if self.ended.is_set() and len(events) < count:
                break
            time.sleep(0.02)
        raise AssertionError(
            f"{len(self.snapshot())} events arrived, expected {count}; ended: "
            f"{self.ended.is_set()}, error: {self.error!r}; ids {self.ids()[:40]}"
        )

    def ids(self) -> list[int | None]:
        return [event.id for event in self.snapshot()]


class SseStream(_Reader):
    """GET /api/v1/products/events, parsed as EventSource does (fields, blank line, comments)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        super().__init__()
        self.status: int | None = None
        self.headers: httpx.Headers | None = None
        self.body = b""
        self._client = httpx.Client(timeout=httpx.Timeout(5.0, read=None))
        self._thread = threading.Thread(target=self._run, args=(url, headers or {}), daemon=True)
        self._thread.start()
        assert self.opened.wait(15), f"the stream did not open: {self.error!r}"

    def _run(self, url: str, headers: dict[str, str]) -> None:
        try:
            with self._client.stream("GET", url, headers=headers) as response:
                self._response = response
                self.status, self.headers = response.status_code, response.headers
                if response.status_code != 200:
                    self.body = response.read()
                    self.opened.set()
                    return
                self.opened.set()
                fields: dict[str, str] = {}
                for line in response.iter_lines():
                    if line == "":
                        if "event" in fields or "data" in fields:
                            self._add(
                                Received(
                                    int(fields["id"]) if "id" in fields else None,
                                    fields.get("event", "message"),
                                    json.loads(fields.get("data", "null")),
                                )
                            )
                        fields = {}
                    elif line.startswith(":"):
                        self.comments.append(line[1:].strip())
                    else:
                        name, _, value = line.partition(":")
                        fields[name] = value.removeprefix(" ")
        except httpx.HTTPError as error:
            if not self._closing:
                self.error = error
        except BaseException as error:
            self.error = error
        finally:
            self.opened.set()
            self.ended.set()

    _closing = False
    _response: httpx.Response | None = None

    def close(self) -> None:
        self._closing = True
        # Closing the client does not wake a thread blocked reading the
        # stream; shutting its socket down does (else each close waited 5 s).
        if self._response is not None:
            stream = self._response.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self._client.close()
        self._thread.join(5)


class WsStream(_Reader):
    """The WebSocket /api/v1/products/ws: one JSON message per event."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.close_code: int | None = None
        self.close_reason = ""
        self._connection: ClientConnection | None = None
        self._thread = threading.Thread(target=self._run, args=(url,), daemon=True)
        self._thread.start()
        assert self.opened.wait(15), f"the WebSocket did not open: {self.error!r}"

    def _run(self, url: str) -> None:
        try:
            with connect(url, open_timeout=10) as connection:
                self._connection = connection
                self.opened.set()
                try:
                    for message in connection:
                        item = json.loads(message)
                        self._add(Received(item["id"], item["event"], item["data"]))
                except ConnectionClosed:
                    pass
                self.close_code = connection.close_code
                self.close_reason = connection.close_reason or ""
        except BaseException as error:
            self.error = error
        finally:
            self.opened.set()
            self.ended.set()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self._thread.join(5)


def ws_url(base_url: str, query: str = "") -> str:
    return base_url.replace("http://", "ws://", 1) + "/api/v1/products/ws" + query


def events_url(base_url: str, query: str = "") -> str:
    return base_url + "/api/v1/products/events" + query
