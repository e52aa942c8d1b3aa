"""Pure ASGI middleware: cheap per request, and no buffering of bodies."""

import logging
import re
import time
import uuid
from collections.abc import Mapping, Sequence

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core import metrics
from app.core.context import request_id_var, user_id_var
from app.core.http import NO_STORE
from app.core.problems import problem_response, send_problem

access_logger = logging.getLogger("app.access")
error_logger = logging.getLogger("app.errors")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class RequestContextMiddleware:
    """Gives each request an id, logs one line for it, and is the last resort for errors.

    Unhandled exceptions are answered here rather than by Starlette's
    outermost handler, so even a 500 carries `X-Request-ID` and goes through
    the same log line as every other response.
    """

    def __init__(self, app: ASGIApp, route_templates: Mapping[int, str]) -> None:
        self.app = app
        # Routers are included by reference, so a route's own `path` lacks the
        # prefixes it was included under; the full templates are built once,
        # keyed by id(route).
        self.route_templates = route_templates

    def route_template(self, scope: Scope) -> str:
        """The matched route's template (`/api/v1/products/{product_id}`), never ids."""
        route = scope.get("route")
        if route is None:
            return "<unmatched>"
        return self.route_templates.get(id(route)) or str(getattr(route, "path", "<unmatched>"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        incoming = Headers(scope=scope).get("x-request-id", "")
        request_id = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        request_token = request_id_var.set(request_id)
        user_token = user_id_var.set(None)
        started = time.perf_counter()
        finished: float | None = None
        status = 500
        response_started = False
        metrics.IN_FLIGHT.inc()

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started, finished
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                # The client has its answer; background tasks (a mail's
                # dispatch) run after this and are not the request's time.
                finished = time.perf_counter()

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            error_logger.exception(
                "unhandled error in %s %s", scope["method"], self.route_template(scope)
            )
            if not response_started:
                await send_problem(
                    scope, receive, send_with_id, 500, "An unexpected error occurred."
                )
        finally:
            elapsed = (finished or time.perf_counter()) - started
            elapsed_ms = elapsed * 1000
            route = self.route_template(scope)
            metrics.IN_FLIGHT.dec()
            metrics.observe_request(scope["method"], route, status, elapsed)
            if access_logger.isEnabledFor(logging.INFO):  # else skip building the record
                access_logger.info(
                    "%s %s %s %.1fms",
                    scope["method"],
                    route,
                    status,
                    elapsed_ms,
                    extra={
                        "method": scope["method"],
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed_ms, 2),
                    },
                )
            user_id_var.reset(user_token)
            request_id_var.reset(request_token)


class CORSProblemMiddleware(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered as a 403 problem.

    Starlette answers it with a plain-text 400; here every error is
    problem+json, and 400 belongs to the token endpoint alone.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "OPTIONS":
            await super().__call__(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if "origin" not in headers or "access-control-request-method" not in headers:
            await super().__call__(scope, receive, send)
            return
        response: Response = self.preflight_response(request_headers=headers)
        if response.status_code == 400:
            refused = bytes(response.body).decode()
            response = problem_response(
                403,
                f"This cross-origin request is not allowed: {refused}.",
                scope["path"],
                headers={
                    k: v for k, v in response.headers.items() if k.startswith("access-control-")
                },
            )
        await response(scope, receive, send)


class SecurityHeadersMiddleware:
    """Headers every response carries, errors and docs pages included.

    API responses are JSON that nothing should render or frame. The docs
    pages load their scripts and styles from this service only: Swagger UI
    and ReDoc style themselves inline and ReDoc runs a worker from a blob.
    HSTS is sent only over HTTPS, where it means something.
    """

    API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
    DOCS_POLICY = (
        "default-src 'none'; script-src 'self'{scripts}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src blob:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
    # The account pages (a link's landing page): their own script and style,
    # calls to this service, nothing else.
    PAGE_POLICY = (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
    HSTS = "max-age=31536000; includeSubDomains"

    def __init__(
        self,
        app: ASGIApp,
        docs_paths: Sequence[str],
        docs_script_hashes: Sequence[str] = (),
        page_paths: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.docs_paths = tuple(docs_paths)
        self.page_paths = tuple(page_paths)
        scripts = "".join(f" '{digest}'" for digest in docs_script_hashes)
        self.docs_policy = self.DOCS_POLICY.format(scripts=scripts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(self.docs_paths):
            policy = self.docs_policy
        elif path.startswith(self.page_paths):
            policy = self.PAGE_POLICY
        else:
            policy = self.API_POLICY
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Content-Security-Policy", policy)
                if https:
                    headers.setdefault("Strict-Transport-Security", self.HSTS)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class CacheControlMiddleware:
    """What no cache may keep (RFC 9111): errors, and every answer to a request with credentials.

    These win over what a route set (a product's `no-cache`): a shared cache
    must never hand one client's signed-in view, or a passing error, to
    another. Routes decide for the rest.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        credentials = any(name == b"authorization" for name, _ in scope["headers"])

        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start" and (
                credentials or message["status"] >= 400
            ):
                MutableHeaders(scope=message)["Cache-Control"] = NO_STORE
            await send(message)

        await self.app(scope, receive, send_with_policy)


class ContentTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than {limit} bytes.")


class BodySizeLimitMiddleware:
    """Refuses bodies over `limit` bytes without reading them into memory.

    A declared Content-Length over the limit is refused before the
    application runs; a chunked body is counted as it streams and refused
    the moment it passes the limit.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await send_problem(
                scope,
                receive,
                send,
                413,
                f"The request body is larger than {self.limit} bytes.",
                headers={"Connection": "close"},
            )
            return

        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise ContentTooLarge(self.limit)
            return message

        await self.app(scope, counting_receive, send)


# Set in the scope a route sees when the client sent HEAD: a route whose body
# never ends (an event stream) answers it with the headers alone.
HEAD_REQUEST = "storefront.head_request"


class HeadMiddleware:
    """Answers HEAD as GET without the body, wherever GET is served (RFC 9110 section 9.3.2).

    The route sees a GET on a copy of the scope; the server, which still
    sees HEAD, is sent the GET's headers and an empty body.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        as_get = {**scope, "method": "GET", HEAD_REQUEST: True}
        try:
            await self.app(as_get, receive, send_headers_only)
        finally:
            if "route" in as_get:  # for the access line, which reads the outer scope
                scope["route"] = as_get["route"]


class TrailingSlashMiddleware:
    """Serves `/x/` exactly like `/x`, without a redirect."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and len(path) > 1 and path.endswith("/"):
            # Changed in place, so outer middleware sees the route matched later.
            scope["path"] = path.rstrip("/") or "/"
            raw_path = scope.get("raw_path")
            if raw_path:
                scope["raw_path"] = raw_path.rstrip(b"/") or b"/"
        await self.app(scope, receive, send)
