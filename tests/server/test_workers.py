"""Two Gunicorn workers behave as one service: state lives in the database, not a process.

Which worker served a request is read from its JSON access log line (it
carries the process id), found by the request's X-Request-ID.
"""

import itertools
import os
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import Server

_ids = itertools.count()
PASSWORD = "correct horse battery"


def call(
    server: Server,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    **kwargs: object,
) -> tuple[httpx.Response, int]:
    """One request on a new connection; returns the response and the worker's pid."""
    request_id = f"t{next(_ids)}-{uuid.uuid4().hex[:8]}"
    response = httpx.request(
        method,
        f"{server.base_url}{path}",
        headers={**(headers or {}), "X-Request-ID": request_id, "Connection": "close"},
        timeout=10,
        **kwargs,  # type: ignore[arg-type]
    )
    return response, server.pid_of(request_id)


def register(server: Server, name: str) -> None:
    body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    response, _ = call(server, "POST", "/api/v1/users", json=body)
    assert response.status_code == 201, response.text


def login(server: Server, name: str, password: str = PASSWORD) -> tuple[httpx.Response, int]:
    return call(server, "POST", "/api/v1/auth/token", data={"username": name, "password": password})


def test_two_workers_boot_on_uvloop(server: Server) -> None:
    records = [r for r in server.log_records() if r.get("message") == "serving"]
    assert len({r["pid"] for r in records}) == 2
    assert all(r["event_loop"].startswith("uvloop") for r in records)


def _listening_sockets(port: int) -> set[int]:
    """Inodes of the TCP sockets listening on `port` (state 0A in /proc/net/tcp)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(int(fields[9]))
    return inodes


def _sockets_of(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def test_each_worker_listens_on_its_own_socket_and_gets_its_share(server: Server) -> None:
    """SO_REUSEPORT: the kernel hands new connections to the workers in turn
    (by a hash of the client's address), where one shared socket let the
    busiest worker take most of them."""
    port = int(server.base_url.rsplit(":", 1)[1])
    listening = _listening_sockets(port)
    workers = server.worker_pids()
    assert len(workers) == 2
    assert len(listening) == 2
    # One listening socket per worker, none in the master.
    assert not _sockets_of(server.process.pid) & listening
    assert all(len(_sockets_of(pid) & listening) == 1 for pid in workers)

    # 64 connections open at once, one request each: every worker serves a
    # fair share (Binomial(64, 1/2) falls under 12 about once in 10 million).
    clients = [httpx.Client(base_url=server.base_url, timeout=10) for _ in range(64)]
    try:
        request_ids = []
        for n, client in enumerate(clients):
            request_ids.append(f"spread-{n}-{uuid.uuid4().hex[:6]}")
            response = client.get("/health/live", headers={"X-Request-ID": request_ids[-1]})
            assert response.status_code == 200
    finally:
        for client in clients:
            client.close()
    served = Counter(server.pid_of(request_id) for request_id in request_ids)
    assert set(served) == workers
    assert min(served.values()) >= 12, served


def test_a_refresh_token_retired_by_one_worker_is_refused_by_the_other(server: Server) -> None:
    register(server, "alice")
    for _ in range(30):
        tokens = login(server, "alice")[0].json()
        rotated, retiring_pid = call(
            server, "POST", "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert rotated.status_code == 200
        replayed, replaying_pid = call(
            server, "POST", "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert replayed.status_code == 401
        assert replayed.headers["www-authenticate"] == "Bearer"
        # The replay revoked the family: the token issued by the rotation is dead too.
        newest, _ = call(
            server,
            "POST",
            "/api/v1/auth/refresh",
            json={"refresh_token": rotated.json()["refresh_token"]},
        )
        assert newest.status_code == 401
        if replaying_pid != retiring_pid:
            return
    pytest.fail("the replay never reached the other worker")


def test_failed_logins_count_across_workers(server: Server) -> None:
    for attempt in range(10):
        name = f"carol{attempt}"
        register(server, name)
        pids = set()
        for _ in range(5):
            failed, pid = login(server, name, "wrong password")
            assert failed.status_code == 400
            assert failed.json()["error"] == "invalid_grant"
            pids.add(pid)
        blocked, _ = login(server, name)  # the right password, yet throttled
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) > 0
        if len(pids) == 2:
            return
    pytest.fail("the failures never spread over both workers")


def test_a_conditional_update_conflict_holds_across_workers(server: Server) -> None:
    register(server, "dave")
    token = login(server, "dave")[0].json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    created, _ = call(
        server, "POST", "/api/v1/products", json={"name": "Cup", "price": "3.50"}, headers=auth
    )
    assert created.status_code == 201
    path = created.headers["location"]
    first, _ = call(server, "PATCH", path, json={"price": 4}, headers={**auth, "If-Match": '"1"'})
    second, _ = call(server, "PATCH", path, json={"price": 5}, headers={**auth, "If-Match": '"1"'})
    assert sorted([first.status_code, second.status_code]) == [200, 412]
