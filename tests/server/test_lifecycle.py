"""Restarts: SIGTERM drains requests in flight and exits 0; a killed worker is replaced."""

import json
import os
import signal
import socket
import time

import httpx

from tests.server.conftest import Server


def read_response(connection: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        assert chunk, f"connection closed before the response headers: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = connection.recv(65536)
        assert chunk, "connection closed in the middle of the response body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def begin_registration(server: Server, username: str) -> tuple[socket.socket, bytes]:
    """A registration the server has begun to read: its headers and the start of its body.

    Returns the connection and the rest of the body, for the test to send.
    """
    body = json.dumps(
        {"username": username, "email": f"{username}@example.com", "password": "correct horse"}
    ).encode()
    host, port = server.base_url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=30)
    connection.sendall(
        b"POST /api/v1/users HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[:10]
    )
    return connection, body[10:]


def test_sigterm_lets_a_request_in_flight_finish_then_exits_0(server: Server) -> None:
    host, port = server.base_url.removeprefix("http://").split(":")
    connection, rest = begin_registration(server, "slowpoke")
    with connection:
        time.sleep(1.0)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(1.5)

        # No new connections are taken while the old request is drained.
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
            refused = False
        except OSError:
            refused = True
        assert refused, "a new connection was accepted after SIGTERM"

        connection.sendall(rest)
        status, headers, payload = read_response(connection)

    assert status == 201, payload
    assert json.loads(payload)["username"] == "slowpoke"
    assert headers["location"].startswith("/api/v1/users/")
    assert server.process.wait(timeout=30) == 0


def test_a_killed_worker_is_replaced_and_the_service_keeps_answering(server: Server) -> None:
    victims = sorted(server.worker_pids())
    assert len(victims) == 2
    os.kill(victims[0], signal.SIGKILL)

    deadline = time.monotonic() + 30
    replaced = False
    while time.monotonic() < deadline:
        response = httpx.get(f"{server.base_url}/health/live", headers={"Connection": "close"})
        assert response.status_code == 200
        live = server.worker_pids() - {victims[0]}
        if len(live) >= 2:
            replaced = True
            break
        time.sleep(0.2)
    assert replaced, "no new worker took the killed one's place"
    assert httpx.get(f"{server.base_url}/health/ready").status_code == 200
