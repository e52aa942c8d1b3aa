"""What operators see of the production command: JSON logs, metrics across workers, no secrets.

The server runs with two workers and JSON logs; its stderr, Gunicorn's own
lines included, is read back from the log file.
"""

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import TEST_SECRET_KEY
from tests.server.conftest import Server, server_environment, start_server

PASSWORD = "first secret passphrase"
NEW_PASSWORD = "second secret passphrase"
WRONG_PASSWORD = "not-the-password-4711"


@pytest.fixture
def debug_server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    """Two workers logging at DEBUG, the level most likely to say too much."""
    environment = server_environment(database_url, tmp_path / "data", LOG_LEVEL="DEBUG")
    running = start_server(environment, tmp_path / "server.log")
    yield running
    running.stop()


def fresh(base_url: str, method: str, path: str, **kwargs: object) -> httpx.Response:
    """One request on its own connection, so that both workers get some."""
    headers = {"Connection": "close", **kwargs.pop("headers", {})}  # type: ignore[dict-item]
    return httpx.request(method, f"{base_url}{path}", headers=headers, timeout=10, **kwargs)  # type: ignore[arg-type]


def test_every_line_is_json_and_each_request_has_one_access_line(server: Server) -> None:
    body = {"username": "logan", "email": "logan@example.com", "password": PASSWORD}
    assert fresh(server.base_url, "POST", "/api/v1/users", json=body).status_code == 201
    token = fresh(
        server.base_url,
        "POST",
        "/api/v1/auth/token",
        data={"username": "logan", "password": PASSWORD},
    ).json()["access_token"]
    request_id = f"probe-{uuid.uuid4().hex[:8]}"
    me = fresh(
        server.base_url,
        "GET",
        "/api/v1/users/me",
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": request_id},
    )
    assert me.status_code == 200
    server.pid_of(request_id)  # waits for the line to be written

    lines = [line for line in server.log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # fails on any line that is not JSON
    assert any(r["logger"].startswith("gunicorn") for r in records)  # the master's own lines too
    access = [
        r for r in records if r["logger"] == "app.access" and r.get("request_id") == request_id
    ]
    assert len(access) == 1
    line = access[0]
    assert line["level"] == "INFO"
    assert line["method"] == "GET"
    assert line["route"] == "/api/v1/users/me"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float | int)
    assert line["user_id"] == me.json()["id"]
    assert line["time"].endswith("+00:00")


def test_metrics_add_up_across_workers(server: Server) -> None:
    pids = set()
    for _ in range(30):
        request_id = f"m-{uuid.uuid4().hex[:10]}"
        response = fresh(
            server.base_url, "GET", "/health/live", headers={"X-Request-ID": request_id}
        )
        assert response.status_code == 200
        pids.add(server.pid_of(request_id))
    assert len(pids) == 2, "both workers should have served some of the requests"

    for _ in range(6):  # whichever worker answers the scrape, it reports the sum
        scrape = fresh(server.base_url, "GET", "/metrics")
        samples = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(scrape.text)
            for s in family.samples
        }
        labels = frozenset({"method": "GET", "route": "/health/live", "status": "200"}.items())
        assert samples[("http_requests_total", labels)] == 30
        capacity = samples[("db_pool_capacity", frozenset())]
        assert capacity == 40  # DB_MAX_CONNECTIONS (default), shared by the two workers


def test_no_secret_reaches_the_logs(debug_server: Server, database_url: str) -> None:
    base = debug_server.base_url
    body = {"username": "casey", "email": "casey@example.com", "password": PASSWORD}
    assert fresh(base, "POST", "/api/v1/users", json=body).status_code == 201
    form = {"username": "casey", "password": PASSWORD}
    pair = fresh(base, "POST", "/api/v1/auth/token", data=form).json()
    wrong = fresh(base, "POST", "/api/v1/auth/token", data={**form, "password": WRONG_PASSWORD})
    assert wrong.status_code == 400
    auth = {"Authorization": f"Bearer {pair['access_token']}"}
    rotated = fresh(
        base, "POST", "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert rotated.status_code == 200
    reused = fresh(
        base, "POST", "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert reused.status_code == 401
    invalid = fresh(
        base,
        "POST",
        "/api/v1/users",
        json={**body, "username": "x", "password": NEW_PASSWORD + "!"},
    )
    assert invalid.status_code == 422
    new_pair = fresh(base, "POST", "/api/v1/auth/token", data=form).json()
    changed = fresh(
        base,
        "POST",
        "/api/v1/users/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers={"Authorization": f"Bearer {new_pair['access_token']}"},
    )
    assert changed.status_code == 204
    stale = fresh(base, "GET", "/api/v1/users/me", headers=auth)
    assert stale.status_code == 401
    out = fresh(
        base, "POST", "/api/v1/auth/logout", json={"refresh_token": new_pair["refresh_token"]}
    )
    assert out.status_code == 204

    hashes = asyncio.run(_password_hashes(database_url))
    assert hashes

    debug_server.stop()
    log = debug_server.log_path.read_text()
    assert "DEBUG" in log  # the run really logged at DEBUG
    secrets = {
        "password": PASSWORD,
        "new password": NEW_PASSWORD,
        "wrong password": WRONG_PASSWORD,
        "secret key": TEST_SECRET_KEY,
        "access token": pair["access_token"],
        "refresh token": pair["refresh_token"],
        "rotated refresh token": rotated.json()["refresh_token"],
        "later access token": new_pair["access_token"],
    }
    secrets |= {f"password hash {i}": h for i, h in enumerate(hashes)}
    # The signature part alone must not appear either (a token cut in a line).
    secrets |= {
        f"signature of {k}": v.rsplit(".", 1)[-1] for k, v in secrets.items() if "token" in k
    }
    leaked = [name for name, value in secrets.items() if value in log]
    assert not leaked, f"found in the logs: {leaked}"


async def _password_hashes(database_url: str) -> list[str]:
    engine = create_async_engine(database_url)
    async with engine.connect() as connection:
        hashes = list((await connection.execute(text("SELECT password_hash FROM users"))).scalars())
    await engine.dispose()
    return hashes
