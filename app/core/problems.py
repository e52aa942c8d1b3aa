"""RFC 9457 problem details: the one place where every error becomes a response."""

import logging
import sqlite3
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError, WebSocketRequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.routing import Match, Mount
from starlette.types import Receive, Scope, Send

from app.core import exceptions as exc
from app.core.context import request_id_var

logger = logging.getLogger("app.errors")

PROBLEM_MEDIA_TYPE = "application/problem+json"
DATABASE_RETRY_AFTER_SECONDS = 5
# A body of a million unknown keys must not earn a response larger than itself.
MAX_REPORTED_ERRORS = 100

# Reason phrases as RFC 9110 names them (Python 3.11 still has the older ones).
_TITLES = {413: "Content Too Large", 422: "Unprocessable Content"}

# Most specific class first: a subclass must come before its parent.
_DOMAIN_STATUS: Sequence[tuple[type[exc.DomainError], int]] = (
    (exc.OAuth2Error, 400),
    (exc.InvalidToken, 400),
    (exc.NotAuthenticated, 401),
    (exc.PermissionDenied, 403),
    (exc.NotFound, 404),
    (exc.Conflict, 409),
    (exc.PreconditionFailed, 412),
    (exc.IdempotencyKeyReused, 422),
    (exc.RateLimited, 429),
    (exc.Busy, 503),
)

# Failures that mean "the database cannot be reached right now", not "a bug".
_OUTAGES: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    OSError,  # asyncpg raises ConnectionRefusedError and TimeoutError unwrapped
)
# Also handled: any other driver error, an outage only if it cost the
# connection (asyncpg's "connection was closed in the middle of operation"
# is a plain DBAPIError), else a bug.
DATABASE_ERRORS = (*_OUTAGES, sqlalchemy.exc.DBAPIError)
# PostgreSQL's error classes that mean "not now" rather than "wrong": 08
# connection exceptions, 53 insufficient resources ("too many clients"), 57P
# operator intervention (shutting down, starting up).
# 25006 read-only transaction: a write reached a standby (DATABASE_URL names a
# replica, or a failover demoted the primary); not now, not wrong.
READ_ONLY_SQLSTATE = "25006"
_UNAVAILABLE_SQLSTATES = ("08", "53", "57P", READ_ONLY_SQLSTATE)
# SQLite reports a mistake in a statement ("no such column") with the same
# OperationalError as a file it cannot use; only these primary result codes
# (BUSY, LOCKED, IOERR, FULL, CANTOPEN) mean the database is unavailable.
_SQLITE_UNAVAILABLE_CODES = frozenset({5, 6, 10, 13, 14})

_PROBED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


class Problem(BaseModel):
    """An RFC 9457 problem details object."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "type": "about:blank",
                "title": "Not Found",
                "status": 404,
                "detail": "Product 999 does not exist.",
                "instance": "/api/v1/products/999",
                "request_id": "0f4c6b1e9a2d4e37b1c2d3e4f5a6b7c8",
            }
        }
    )

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str
    request_id: str | None = None


class OAuth2Problem(Problem):
    """A token endpoint error: a problem that also carries RFC 6749's `error` code."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "type": "about:blank",
                "title": "Bad Request",
                "status": 400,
                "detail": "Incorrect username or password.",
                "instance": "/api/v1/auth/token",
                "request_id": "0f4c6b1e9a2d4e37b1c2d3e4f5a6b7c8",
                "error": "invalid_grant",
                "error_description": "Incorrect username or password.",
            }
        }
    )

    error: str = Field(examples=["invalid_grant"])
    error_description: str | None = None


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationProblem(Problem):
    """A 422: what was wrong with the request, one entry per problem found."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "type": "about:blank",
                "title": "Unprocessable Content",
                "status": 422,
                "detail": "The request is not valid: see the error below.",
                "instance": "/api/v1/products",
                "request_id": "0f4c6b1e9a2d4e37b1c2d3e4f5a6b7c8",
                "errors": [
                    {
                        "loc": ["body", "price"],
                        "msg": "Input should be a valid decimal",
                        "type": "decimal_parsing",
                    }
                ],
            }
        }
    )

    errors: list[ValidationIssue]


def title_for(status: int) -> str:
    return _TITLES.get(status) or HTTPStatus(status).phrase


def problem_response(
    status: int,
    detail: str,
    instance: str,
    *,
    headers: Mapping[str, str] | None = None,
    **members: Any,
) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": title_for(status),
        "status": status,
        "detail": detail,
        "instance": instance,
        "request_id": request_id_var.get(),
        **members,
    }
    return JSONResponse(body, status, headers=dict(headers or {}), media_type=PROBLEM_MEDIA_TYPE)


async def send_problem(
    scope: Scope, receive: Receive, send: Send, status: int, detail: str, **kwargs: Any
) -> None:
    """For middleware, which answers before (or instead of) the application."""
    response = problem_response(status, detail, scope.get("path", ""), **kwargs)
    await response(scope, receive, send)


def _domain_status(error: exc.DomainError) -> int:
    for cls, status in _DOMAIN_STATUS:
        if isinstance(error, cls):
            return status
    return 400


async def _on_domain_error(request: Request, error: Exception) -> JSONResponse:
    if not isinstance(error, exc.DomainError):
        raise TypeError(error)
    status = _domain_status(error)
    headers: dict[str, str] = {}
    members: dict[str, Any] = {}
    if isinstance(error, exc.InvalidAccessToken):
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    elif isinstance(error, exc.NotAuthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(error, exc.RetryLater):
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, exc.OAuth2Error):
        members = {"error": error.error, "error_description": error.detail}
        headers["Cache-Control"] = "no-store"
    if isinstance(error, exc.IdempotencyKeyReused):
        # Every 422 lists its problems in `errors` (API.md), this one too.
        issue = {
            "loc": ["header", "Idempotency-Key"],
            "msg": error.detail,
            "type": "idempotency_key_reused",
        }
        members = {"errors": [issue]}
    return problem_response(status, error.detail, request.url.path, headers=headers, **members)


def _describe_http_error(error: HTTPException, request: Request) -> str:
    if error.status_code == 404 and error.detail == title_for(404):
        return f"Nothing is served at {request.url.path}."
    if error.status_code == 405:
        return f"{request.method} is not allowed on {request.url.path}."
    return str(error.detail)


def _allowed_methods(request: Request) -> str | None:
    """Every method served at the request's path.

    Starlette's 405 names only the methods of the first route whose path
    matched, and `/api/v1/users/me` has one route per method.
    """
    routes = [route for route in request.app.router.routes if not isinstance(route, Mount)]
    allowed = []
    for method in _PROBED_METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in routes):
            allowed.append(method)
    if "GET" in allowed and "HEAD" not in allowed:
        allowed.insert(allowed.index("GET") + 1, "HEAD")  # see HeadMiddleware
    return ", ".join(allowed) or None


async def _on_http_error(request: Request, error: Exception) -> JSONResponse:
    if not isinstance(error, HTTPException):
        raise TypeError(error)
    headers = dict(error.headers or {})
    if error.status_code == 405:
        allowed = _allowed_methods(request)
        if allowed is not None:
            headers["Allow"] = allowed
    return problem_response(
        error.status_code,
        _describe_http_error(error, request),
        request.url.path,
        headers=headers,
    )


def validation_issues(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Only location, message and type: Pydantic's `input` could hold a password."""
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]


async def _on_validation_error(request: Request, error: Exception) -> JSONResponse:
    if not isinstance(error, RequestValidationError):
        raise TypeError(error)
    found = error.errors()
    count = len(found)
    if count == 1:
        detail = "The request is not valid: see the error below."
    elif count <= MAX_REPORTED_ERRORS:
        detail = f"The request is not valid: see the {count} errors below."
    else:
        detail = f"The request is not valid: {count} errors, the first {MAX_REPORTED_ERRORS} below."
    issues = validation_issues(found[:MAX_REPORTED_ERRORS])
    return problem_response(422, detail, request.url.path, errors=issues)


async def _on_integrity_error(request: Request, error: Exception) -> JSONResponse:
    # Services turn the uniqueness rules they know into precise 409s; this is
    # the backstop for a constraint no service anticipated.
    logger.warning("integrity error not handled by a service: %s", type(error).__name__)
    return problem_response(
        409, "The request conflicts with data already stored.", request.url.path
    )


def _sqlstate(error: Exception) -> str:
    return str(getattr(getattr(error, "orig", None), "sqlstate", None) or "")


def _is_unavailability(error: Exception) -> bool:
    if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
        return True
    cause = getattr(error, "orig", None)
    if _sqlstate(error).startswith(_UNAVAILABLE_SQLSTATES):
        return True
    if isinstance(cause, sqlite3.Error):
        code = getattr(cause, "sqlite_errorcode", None)
        return code is None or code & 0xFF in _SQLITE_UNAVAILABLE_CODES
    return isinstance(error, _OUTAGES)


async def _on_database_unavailable(request: Request, error: Exception) -> JSONResponse:
    if not _is_unavailability(error):
        raise error  # a bug, not an outage: the last-resort handler logs it and answers 500
    kind = type(error)  # its module tells a full pool (sqlalchemy) from a slow database
    if _sqlstate(error) == READ_ONLY_SQLSTATE:
        logger.error(
            "database unavailable: a write reached a read-only database (SQLSTATE 25006): "
            "DATABASE_URL names a standby, or the primary was demoted by a failover"
        )
    else:
        logger.error("database unavailable: %s.%s", kind.__module__, kind.__qualname__)
    return problem_response(
        503,
        "The database is unavailable; try again shortly.",
        request.url.path,
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
    )


async def _on_websocket_validation_error(websocket: WebSocket, error: Exception) -> None:
    """Invalid parameters on a WebSocket: accepted, then closed with 1008 and the reason.

    (Closing before accepting would refuse the handshake with a bare 403.)
    """
    if not isinstance(error, WebSocketRequestValidationError):
        raise TypeError(error)
    problems = [
        f"{'.'.join(str(part) for part in issue['loc'])}: {issue['msg']}"
        for issue in validation_issues(error.errors())
    ]
    await websocket.accept()
    # A close reason is at most 123 bytes.
    reason = "; ".join(problems).encode()[:120].decode(errors="ignore")
    await websocket.close(code=1008, reason=reason)  # policy violation


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(WebSocketRequestValidationError, _on_websocket_validation_error)
    app.add_exception_handler(exc.DomainError, _on_domain_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(sqlalchemy.exc.IntegrityError, _on_integrity_error)
    for error_class in DATABASE_ERRORS:
        app.add_exception_handler(error_class, _on_database_unavailable)
