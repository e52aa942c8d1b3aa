"""API.md "Errors": every layer answers with RFC 9457 problem details.

Routing (404, 405 with `Allow`), validation (422 with `errors` of exactly
`loc`, `msg`, `type`), authentication (401), and the unexpected (500 with a
generic detail, logged with the request id, never leaking the exception).
"""

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text

from app.core.database import SessionDep
from app.users.models import User
from tests.core.conftest import LogLines
from tests.support import DatabaseProbe, assert_problem

SECRET_MESSAGE = "password_hash=$argon2id$v=19$leaked in SELECT * FROM users"


def _add_failing_routes(app: FastAPI) -> None:
    """Throwaway routes that fail the way a bug would, for the 500 tests."""

    async def raise_runtime_error() -> dict[str, str]:
        raise RuntimeError(SECRET_MESSAGE)

    async def run_broken_statement(session: SessionDep) -> dict[str, str]:
        # A bind parameter left without a value: SQLAlchemy's error quotes the SQL.
        await session.execute(text("SELECT password_hash FROM users WHERE username = :name"))
        return {}

    async def select_missing_column(session: SessionDep) -> dict[str, str]:
        await session.execute(text("SELECT secret_column_that_does_not_exist FROM users"))
        return {}

    app.add_api_route("/test-only/runtime-error", raise_runtime_error)
    app.add_api_route("/test-only/broken-statement", run_broken_statement)
    app.add_api_route("/test-only/missing-column", select_missing_column)


def _assert_reveals_nothing(response: httpx.Response, *secrets: str) -> None:
    for secret in ("Traceback", 'File "', "RuntimeError", "sqlalchemy", "SELECT", *secrets):
        assert secret not in response.text, secret


async def test_unknown_route_is_a_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/no-such-thing")
    body = assert_problem(response, 404)
    assert body["title"] == "Not Found"
    assert body["instance"] == "/api/v1/no-such-thing"


async def test_unknown_route_outside_the_api_is_a_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.post("/", json={})
    assert_problem(response, 404)


async def test_wrong_method_is_a_405_problem_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.delete("/api/v1/products")
    body = assert_problem(response, 405)
    assert body["title"] == "Method Not Allowed"
    allowed = {method.strip() for method in response.headers["allow"].split(",")}
    assert allowed == {"GET", "HEAD", "POST"}


async def test_allow_lists_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    response = await client.put("/api/v1/users/me")
    assert_problem(response, 405)
    allowed = {method.strip() for method in response.headers["allow"].split(",")}
    assert allowed == {"GET", "HEAD", "PATCH", "DELETE"}


async def test_wrong_method_on_health_is_a_405_problem(client: httpx.AsyncClient) -> None:
    response = await client.post("/health/live")
    assert_problem(response, 405)
    assert response.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/products/1"),
        ("GET", "/api/v1/users/me/password"),
        ("PUT", "/api/v1/auth/token"),
        ("DELETE", "/health/ready"),
        ("POST", "/openapi.json"),
        ("POST", "/static/vendor/swagger-ui.css"),
    ],
)
async def test_allow_names_exactly_the_methods_the_path_serves(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    refused = await client.request(method, path)
    assert_problem(refused, 405)
    allowed = [m.strip() for m in refused.headers["allow"].split(",")]
    assert method not in allowed
    for other in allowed:
        answer = await client.request(other, path)
        assert answer.status_code != 405, (other, path)
    for other in {"GET", "POST", "PUT", "PATCH", "DELETE"} - set(allowed):
        assert (await client.request(other, path)).status_code == 405, (other, path)


async def test_validation_errors_have_exactly_loc_msg_type(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/users", json={"username": "x", "email": "not-an-email", "password": "short"}
    )
    body = assert_problem(response, 422)
    assert body["title"] == "Unprocessable Content"
    assert len(body["errors"]) == 3
    for error in body["errors"]:
        assert set(error) == {"loc", "msg", "type"}
        assert isinstance(error["msg"], str)
        assert error["msg"]
        assert isinstance(error["type"], str)
        assert error["type"]
    locations = sorted(tuple(error["loc"]) for error in body["errors"])
    assert locations == [("body", "email"), ("body", "password"), ("body", "username")]


async def test_an_invalid_password_is_never_echoed(
    client: httpx.AsyncClient, db: DatabaseProbe
) -> None:
    # Too long, so it fails validation; Pydantic would put it in `input`.
    password = "Sup3r-Secret-Passw0rd-" * 8
    response = await client.post(
        "/api/v1/users",
        json={"username": "carol", "email": "carol@example.com", "password": password},
    )
    body = assert_problem(response, 422)
    assert [error["loc"] for error in body["errors"]] == [["body", "password"]]
    assert "Sup3r-Secret" not in response.text
    assert await db.scalar(select(func.count()).select_from(User)) == 0


async def test_an_unknown_field_is_named_but_its_value_not_echoed(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/api/v1/users",
        json={
            "username": "carol",
            "email": "carol@example.com",
            "password": "correct horse battery",
            "role": "admin-value-marker",
        },
    )
    body = assert_problem(response, 422)
    assert [error["loc"] for error in body["errors"]] == [["body", "role"]]
    assert "admin-value-marker" not in response.text


async def test_malformed_json_is_a_422_problem(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/users",
        content=b'{"username": "carol",',
        headers={"Content-Type": "application/json"},
    )
    body = assert_problem(response, 422)
    assert [error["loc"] for error in body["errors"]] == [["body"]]
    assert set(body["errors"][0]) == {"loc", "msg", "type"}


async def test_missing_credentials_are_a_401_problem_with_bearer_challenge(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/api/v1/users/me")
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


async def test_an_unexpected_exception_is_a_generic_500_problem(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    _add_failing_routes(app)
    response = await client.get("/test-only/runtime-error")
    body = assert_problem(response, 500)
    assert body["title"] == "Internal Server Error"
    assert body["detail"] == "An unexpected error occurred."
    assert set(body) == {"type", "title", "status", "detail", "instance", "request_id"}
    _assert_reveals_nothing(response, "leaked", "argon2")


async def test_a_failing_sql_statement_is_a_500_that_shows_no_sql(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    _add_failing_routes(app)
    response = await client.get("/test-only/broken-statement")
    body = assert_problem(response, 500)
    assert body["detail"] == "An unexpected error occurred."
    _assert_reveals_nothing(response, "password_hash", "bind parameter", ":name")


async def test_a_query_bug_is_a_500_not_a_database_outage(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    # SQLite reports "no such column" as an OperationalError, the same class
    # as "cannot open the file"; only the latter means the database is down.
    _add_failing_routes(app)
    response = await client.get("/test-only/missing-column")
    assert_problem(response, 500)
    assert "retry-after" not in response.headers
    _assert_reveals_nothing(response, "secret_column_that_does_not_exist")


async def test_a_500_is_logged_with_its_request_id_and_the_error(
    client: httpx.AsyncClient, app: FastAPI, service_log: LogLines
) -> None:
    _add_failing_routes(app)
    response = await client.get(
        "/test-only/runtime-error", headers={"X-Request-ID": "trace-500-abc"}
    )
    assert_problem(response, 500)
    assert response.headers["x-request-id"] == "trace-500-abc"

    errors = service_log.of("app.errors")
    assert len(errors) == 1
    assert errors[0]["level"] == "ERROR"
    assert errors[0]["request_id"] == "trace-500-abc"
    # The server's log is where the details go.
    assert "RuntimeError" in errors[0]["exception"]
    assert "leaked" in errors[0]["exception"]

    [access] = service_log.of("app.access")
    assert access["request_id"] == "trace-500-abc"
    assert access["status"] == 500


async def test_a_failed_request_leaves_no_partial_writes(
    client: httpx.AsyncClient, app: FastAPI, db: DatabaseProbe
) -> None:
    async def write_then_fail(session: SessionDep) -> dict[str, str]:
        session.add(
            User(
                username="ghost",
                email="ghost@example.com",
                password_hash="x",
            )
        )
        await session.flush()
        raise RuntimeError("after the write")

    app.add_api_route("/test-only/write-then-fail", write_then_fail, methods=["POST"])
    response = await client.post("/test-only/write-then-fail")
    assert_problem(response, 500)
    assert await db.scalar(select(func.count()).select_from(User)) == 0


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/v1/products/0", 422),
        ("GET", "/api/v1/products/abc", 422),
        ("GET", "/api/v1/products/999", 404),
        ("GET", "/api/v1/users/1", 401),
        ("PATCH", "/api/v1/products", 405),
    ],
)
async def test_errors_of_every_layer_share_the_problem_shape(
    client: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    response = await client.request(method, path)
    body = assert_problem(response, status)
    assert body["instance"] == path
