"""OWASP API8:2023 Security Misconfiguration, applied to this service.

Settings and defaults that would open the service up: CORS that lets any
web page call the API with a user's token; responses a browser could sniff,
frame or leak through the Referer; HSTS missing over HTTPS; error bodies
that show stack traces, SQL, exception text or the values a client sent
(a password, say); API docs that cannot be switched off; a production
server that starts with the sample or a weak `SECRET_KEY`; a `Server` header
that names versions an attacker could look up; methods like TRACE answered.

Defences shown here: CORS is off unless `CORS_ORIGINS` names origins, and
then exactly those get CORS headers (never with credentials); every
response carries `X-Content-Type-Options: nosniff`, `Referrer-Policy:
no-referrer`, `X-Frame-Options: DENY` and a deny-all CSP, plus HSTS over
HTTPS; one last-resort handler turns any exception into a generic 500
problem; a 422 names where the input is wrong but never what it was;
`DOCS_ENABLED=false` removes docs, schema and their assets; settings refuse
a missing, short or sample key in production before the app starts; and
under the production command (Gunicorn with Uvicorn workers) the `Server`
header is Uvicorn's bare `uvicorn`, with no version.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import text

from app.core.config import SAMPLE_SECRET_KEY, Settings
from tests.conftest import make_settings
from tests.server.conftest import PROJECT_ROOT, server_environment, start_server
from tests.support import Account, assert_problem, client_for

SHOP = "https://shop.example.com"
MARKER = "Zebra-Secret-7731"


def policy(response: httpx.Response) -> dict[str, str]:
    parts = (p.strip() for p in response.headers["content-security-policy"].split(";"))
    return {name: rest for name, _, rest in (p.partition(" ") for p in parts if p)}


@pytest.fixture
async def cors_client(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(database_url, tmp_path / "cors", cors_origins=[SHOP])
    async with client_for(settings) as (_, client):
        yield client


async def test_cors_answers_only_the_configured_origins(cors_client: httpx.AsyncClient) -> None:
    allowed = await cors_client.get("/api/v1/products", headers={"Origin": SHOP})
    assert allowed.headers["access-control-allow-origin"] == SHOP
    assert "access-control-allow-credentials" not in allowed.headers
    assert "origin" in allowed.headers["vary"].lower()  # caches keep the answers apart

    for origin in (
        "https://evil.example",
        "null",
        f"{SHOP}.evil.example",
        "http://shop.example.com",
    ):
        response = await cors_client.get("/api/v1/products", headers={"Origin": origin})
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers, origin
        preflight = await cors_client.options(
            "/api/v1/users/me",
            headers={"Origin": origin, "Access-Control-Request-Method": "DELETE"},
        )
        assert_problem(preflight, 403)
        assert "access-control-allow-origin" not in preflight.headers, origin


async def test_without_cors_origins_no_origin_gets_cors_headers(
    client: httpx.AsyncClient, user: Account
) -> None:
    response = await client.get("/api/v1/users/me", headers={**user.headers, "Origin": SHOP})
    preflight = await client.options(
        "/api/v1/users/me", headers={"Origin": SHOP, "Access-Control-Request-Method": "GET"}
    )
    assert response.status_code == 200
    assert not any(name.startswith("access-control-") for name in response.headers)
    assert not any(name.startswith("access-control-") for name in preflight.headers)
    assert preflight.status_code == 405


def assert_hardened(response: httpx.Response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"
    directives = policy(response)
    assert directives["default-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"


async def explode() -> None:
    raise RuntimeError(f"{MARKER}: SELECT password_hash FROM users WHERE id = 1")  # noqa: S608


async def test_success_and_error_responses_all_carry_the_security_headers(
    app: FastAPI, client: httpx.AsyncClient, user: Account
) -> None:
    app.add_api_route("/explode", explode)
    responses = [
        await client.get("/api/v1/users/me", headers=user.headers),
        await client.get("/api/v1/users/me"),
        await client.get("/api/v1/products/999"),
        await client.get("/api/v1/products", params={"limit": 0}),
        await client.delete("/api/v1/products"),
        await client.get("/nowhere"),
        await client.get("/explode"),
    ]
    assert [r.status_code for r in responses] == [200, 401, 404, 422, 405, 404, 500]
    for response in responses:
        assert_hardened(response)
        assert "strict-transport-security" not in response.headers  # plain HTTP


async def test_hsts_is_sent_over_https(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        response = await client.get("/api/v1/products")
    max_age = response.headers["strict-transport-security"].split(";")[0]
    assert int(max_age.removeprefix("max-age=")) >= 180 * 24 * 3600


async def test_a_500_shows_no_traceback_no_sql_and_no_exception_text(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    async def bad_sql() -> None:
        async with app.state.database.engine.connect() as connection:
            missing = f"no_such_table_{MARKER.lower().replace('-', '_')}"
            await connection.execute(text(f"SELECT secret FROM {missing}"))  # noqa: S608

    app.add_api_route("/explode", explode)
    app.add_api_route("/bad-sql", bad_sql)

    for path in ("/explode", "/bad-sql"):
        response = await client.get(path)
        body = assert_problem(response, 500)
        assert body["detail"] == "An unexpected error occurred."
        assert set(body) == {"type", "title", "status", "detail", "instance", "request_id"}
        lowered = response.text.lower()
        for leak in (MARKER.lower(), "select", "traceback", "error:", "sqlalchemy", ".py", "line "):
            assert leak not in lowered, (path, leak)


async def test_validation_errors_never_echo_what_was_sent(
    client: httpx.AsyncClient, user: Account
) -> None:
    secret = MARKER * 10  # too long for a password, so it fails validation
    responses = [
        await client.post(
            "/api/v1/users",
            json={"username": MARKER, "email": f"{MARKER}@", "password": secret, "role": MARKER},
        ),
        await client.patch(
            "/api/v1/users/me", json={"email": MARKER, "full_name": [MARKER]}, headers=user.headers
        ),
        await client.post(
            "/api/v1/products",
            json={"name": MARKER, "price": MARKER, "sku": f"{MARKER}!"},
            headers=user.headers,
        ),
        await client.post(
            "/api/v1/users/me/password",
            json={"current_password": MARKER, "new_password": "short"},
            headers=user.headers,
        ),
        await client.get("/api/v1/products", params={"sort": MARKER, "limit": MARKER}),
        await client.get(f"/api/v1/products/{MARKER}"),
    ]
    for response in responses:
        body = assert_problem(response, 422)
        body.pop("instance")  # the path the client asked for, by RFC 9457's design
        assert MARKER not in json.dumps(body), response.request.url
        for error in body["errors"]:
            assert set(error) == {"loc", "msg", "type"}

    token = await client.post(
        "/api/v1/auth/token", data={"username": MARKER, "password": secret * 20}
    )
    assert_problem(token, 400)
    assert MARKER not in token.text


async def test_docs_and_schema_can_be_switched_off(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path / "nodocs", docs_enabled=False)
    async with client_for(settings) as (_, client):
        for path in (
            "/docs",
            "/redoc",
            "/openapi.json",
            "/docs/oauth2-redirect",
            "/static/vendor/swagger-ui-bundle.js",
            "/static/app/swagger-init.js",
        ):
            assert_problem(await client.get(path), 404)
        assert (await client.get("/api/v1/products")).status_code == 200


async def test_trace_is_refused_and_debug_mode_is_off(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    assert app.debug is False  # Starlette's debug mode would answer errors with tracebacks
    for path in ("/api/v1/products", "/api/v1/users/me", "/health/live"):
        response = await client.request("TRACE", path, headers={"X-Secret": MARKER})
        assert_problem(response, 405)
        assert "TRACE" not in response.headers["allow"]
        assert MARKER not in response.text


@pytest.mark.parametrize(
    "key",
    [None, SAMPLE_SECRET_KEY, "change-me-please-to-something-long-enough", "short-key"],
    ids=["missing", "sample", "change-me", "short"],
)
def test_production_refuses_a_missing_sample_or_weak_secret_key(key: str | None) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, environment="production", secret_key=key)  # type: ignore[call-arg]
    if key:
        assert key not in str(refused.value)


def test_the_production_app_will_not_load_with_the_sample_key(tmp_path: Path) -> None:
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "ENVIRONMENT": "production",
        "SECRET_KEY": SAMPLE_SECRET_KEY,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
    }
    result = subprocess.run(
        [sys.executable, "-c", "import app.main; app.main.app"],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 4  # Gunicorn's "app failed to load": workers are not retried
    assert "SECRET_KEY" in result.stderr
    assert SAMPLE_SECRET_KEY not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_the_production_server_header_names_no_version(
    sqlite_template: Path, tmp_path: Path
) -> None:
    database = tmp_path / "app.db"
    shutil.copyfile(sqlite_template, database)
    environment = server_environment(
        f"sqlite:///{database}", tmp_path / "data", ENVIRONMENT="production"
    )
    server = start_server(environment, tmp_path / "server.log", workers=1)
    try:
        responses = [
            httpx.get(f"{server.base_url}/health/live", timeout=10),
            httpx.get(f"{server.base_url}/nowhere", timeout=10),
            httpx.post(f"{server.base_url}/api/v1/users", content=b"{", timeout=10),
        ]
        host, port = server.base_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            connection.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            garbage_answer = connection.recv(65536).decode("latin-1")
    finally:
        assert server.stop() == 0

    for response in responses:
        assert response.headers["server"] == "uvicorn", response.headers["server"]
        assert "x-powered-by" not in response.headers
        assert_hardened(response)
    assert garbage_answer.startswith("HTTP/1.1 400")
    head = garbage_answer.partition("\r\n\r\n")[0].lower()
    assert "server: uvicorn\r\n" in head + "\r\n"
    for word in ("python", "gunicorn", "httptools", "h11", "traceback"):
        assert word not in garbage_answer.lower()
