"""Route classes and OpenAPI declarations shared by every router."""

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from app.core.exceptions import InvalidRequest, UnsupportedGrantType
from app.core.problems import Problem, ValidationProblem, title_for, validation_issues

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class _DeferredJSONRequest(Request):
    """Reports a body that is not JSON as a validation error, not straight away.

    FastAPI parses JSON before it resolves dependencies, so a malformed body
    would answer 422 before authentication could answer 401. Here the parse
    failure only marks the request; the body then fails validation in its
    turn, after the dependencies (authentication among them) have run.
    """

    json_error: str | None = None

    async def json(self) -> Any:
        try:
            return await super().json()
        except (ValueError, RecursionError) as error:
            self.json_error = str(error) if isinstance(error, ValueError) else "nested too deeply"
            return None


class ApiRoute(APIRoute):
    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            deferred = _DeferredJSONRequest(request.scope, request.receive)
            try:
                return await handler(deferred)
            except RequestValidationError as error:
                if deferred.json_error is None:
                    raise
                issues = [e for e in error.errors() if e["loc"][:1] != ("body",)]
                issues.append(
                    {
                        "loc": ("body",),
                        "msg": "The body is not valid JSON.",
                        "type": "json_invalid",
                    }
                )
                raise RequestValidationError(issues) from error

        return handle


REFRESH_GRANT = "refresh_token"
GRANT_TYPES = ("password", REFRESH_GRANT)


def check_grant_type(grant_type: object) -> None:
    """RFC 6749's unsupported_grant_type, for any `grant_type` sent that is not ours.

    An empty one counts as not sent (RFC 6749 section 3.1): the password grant.
    """
    if grant_type not in (None, "", *GRANT_TYPES):
        raise UnsupportedGrantType(
            "The grant type must be password or refresh_token; no other is supported."
        )


def missing_fields(names: list[str]) -> str:
    return "The form is missing fields or has invalid ones: " + ", ".join(sorted(names)) + "."


class OAuth2FormRoute(ApiRoute):
    """The token endpoint answers a malformed form as RFC 6749 asks: 400 invalid_request.

    An unsupported `grant_type` is answered first, whatever else the form holds
    or lacks: the client asked for something this server never does.
    """

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as error:
                form = error.body
                if hasattr(form, "getlist"):
                    for grant_type in form.getlist("grant_type"):
                        check_grant_type(grant_type)
                fields = [str(issue["loc"][-1]) for issue in validation_issues(error.errors())]
                raise InvalidRequest(missing_fields(sorted(set(fields)))) from error
            except HTTPException as error:
                if error.status_code != 400:
                    raise
                # A body the form parser could not read at all (say, multipart
                # without a boundary) is a malformed request too.
                raise InvalidRequest(f"The form could not be read: {error.detail}") from error

        return handle


_DESCRIPTIONS = {
    400: "The one-time token is unknown, has expired, was already used or was retired; "
    "every such case gets this same answer.",
    401: "Missing, invalid or expired credentials.",
    403: "Signed in, but not allowed to do this.",
    404: "No such resource.",
    409: "Conflicts with stored data (a unique value already taken).",
    412: "`If-Match` does not match the current `ETag`.",
    413: "The request body is larger than `MAX_BODY_BYTES`.",
    422: "The request is not valid; `errors` says where and why.",
    429: "Too many wrong passwords for this account; retry after `Retry-After` seconds.",
    503: "The database is unavailable; retry after `Retry-After` seconds.",
}

_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "Always `Bearer`.",
            "schema": {"type": "string"},
        }
    },
    429: {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
    503: {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
}


_EXAMPLE_DETAILS = {
    400: "The token is not valid: it is unknown, has expired, or was already used.",
    401: "This route needs a bearer access token.",
    403: "Only the product's owner or an admin may change it.",
    404: "Product 999 does not exist.",
    409: "That sku is already taken by another product.",
    412: "If-Match does not match the current version (3).",
    413: "The request body is larger than 1048576 bytes.",
    422: "The request is not valid: see the error below.",
    429: "Too many failed password attempts for this account; try again later.",
    503: "The database is unavailable; try again shortly.",
}


def _example(status: int) -> dict[str, Any]:
    example: dict[str, Any] = {
        "type": "about:blank",
        "title": title_for(status),
        "status": status,
        "detail": _EXAMPLE_DETAILS[status],
        "instance": "/api/v1/products/999",
        "request_id": "0f4c6b1e9a2d4e37b1c2d3e4f5a6b7c8",
    }
    if status == 422:
        example["errors"] = [
            {
                "loc": ["body", "price"],
                "msg": "Input should be a valid decimal",
                "type": "decimal_parsing",
            }
        ]
    return example


def problem_responses(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error responses of a route (served as problem+json).

    `descriptions` overrides the generic text per status: `_404="No such product."`.
    """
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {
            "model": ValidationProblem if status == 422 else Problem,
            "description": descriptions.get(f"_{status}", _DESCRIPTIONS[status]),
        }
        if status in _HEADERS:
            entry["headers"] = _HEADERS[status]
        # Under application/json here; the OpenAPI document moves it to problem+json.
        entry["content"] = {"application/json": {"example": _example(status)}}
        responses[status] = entry
    return responses
