"""The application factory: routers, middleware, error handlers and docs."""

import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import iter_route_contexts
from pydantic import ValidationError

from app import __version__
from app.account.pages import PAGES_PREFIX, install_pages
from app.account.router import router as account_router
from app.auth.router import router as auth_router
from app.core.config import Settings, describe_settings_error, get_settings
from app.core.database import Database
from app.core.logging import configure_logging
from app.core.metrics import router as metrics_router
from app.core.middleware import (
    BodySizeLimitMiddleware,
    CacheControlMiddleware,
    CORSProblemMiddleware,
    HeadMiddleware,
    RequestContextMiddleware,
    SecurityHeadersMiddleware,
    TrailingSlashMiddleware,
)
from app.core.migrations import head_revision
from app.core.problems import PROBLEM_MEDIA_TYPE, install_problem_handlers
from app.core.routing import OAuth2FormRoute
from app.core.security import PasswordHasher, TokenCodec
from app.core.tracing import Tracing, instrument, tracing_requested
from app.docs import DOCS_PATHS, inline_script_hashes, install_docs
from app.events.asyncapi import router as asyncapi_router
from app.events.hub import EventHub
from app.events.router import router as events_router
from app.health.router import router as health_router
from app.mail.dispatcher import STOP_GRACE_SECONDS, MailDispatcher
from app.products.router import router as products_router
from app.users.router import router as users_router

logger = logging.getLogger("app")

API_PREFIX = "/api/v1"
APP_LOAD_ERROR = 4  # gunicorn.arbiter.Arbiter.APP_LOAD_ERROR
OPENAPI_URL = "/openapi.json"

DESCRIPTION = """
A reference REST service: users, OAuth2 password login with rotating refresh
tokens, and products with optimistic concurrency.

* **Errors** are RFC 9457 problem details (`application/problem+json`), with
  the request id; a 422 lists every problem in `errors`.
* **Sign in** with *Authorize* (username or email, and password), or POST the
  form to `/api/v1/auth/token` and send `Authorization: Bearer <access_token>`.
* **Concurrency**: every product change raises `version`; the `ETag` is the
  quoted version. Send `If-Match` to change only the version you read.
* **Retries**: a create sent with an `Idempotency-Key` header is safe to
  retry; the retry gets the first response again and creates nothing.
* **Mail** (a welcome with a verification link, a new verification link, a
  password reset link) is recorded with the change that causes it and sent
  after the response; links carry one-time tokens.
* A trailing slash makes no difference, and every response has `X-Request-ID`.
"""

TAGS = [
    {
        "name": "auth",
        "description": "Tokens: sign in, refresh (rotating), sign out; email verification and "
        "password reset with one-time tokens from a message.",
    },
    {"name": "users", "description": "Registration, your own account, and user admin."},
    {"name": "products", "description": "The catalogue: anyone reads, owners and admins change."},
    {"name": "health", "description": "Liveness and readiness probes."},
]


def create_app(settings: Settings | None = None) -> FastAPI:
    if settings is None:
        settings = get_settings()
    database = Database(settings)
    # MAIL_DISPATCHER=api: this process sends mail (after the requests that
    # write some, and on a timer). =worker: `python -m app worker` does.
    dispatcher = MailDispatcher(database, settings) if settings.mail_dispatcher == "api" else None
    traced = tracing_requested()
    # Live product events: this worker's relay, fan-out and streams.
    hub = EventHub(database, settings)
    database.after_commit.append(hub.after_commit)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loop = type(asyncio.get_running_loop())
        # In the worker, after Gunicorn's fork: the exporter is this process's own.
        tracing = Tracing.start(app.version) if traced else None
        logger.info(
            "serving",
            extra={
                "event_loop": f"{loop.__module__}.{loop.__qualname__}",
                "tracing": "OTLP" if traced else "off",
            },
        )
        stop = asyncio.Event()
        sweeper = None if dispatcher is None else asyncio.create_task(dispatcher.run(stop))
        await hub.start()
        # DATABASE_READ_URL: this worker's replica health check, once a second.
        replica = database.replica
        watcher = None if replica is None else asyncio.create_task(replica.run(stop))
        yield
        await hub.stop()
        stop.set()
        if watcher is not None:
            await watcher
        if sweeper is not None:
            # A send in progress may finish; a longer one is cut off, and its
            # claim expires for another process to send it.
            finished, _unfinished = await asyncio.wait([sweeper], timeout=STOP_GRACE_SECONDS)
            if not finished:
                sweeper.cancel()
        await database.dispose()
        hasher.close()
        if tracing is not None:
            # Flushing the last spans is a blocking HTTP call.
            await asyncio.to_thread(tracing.shutdown)

    app = FastAPI(
        title="Storefront API",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=OPENAPI_URL if settings.docs_enabled else None,
        redirect_slashes=False,
        # Operation ids are the route functions' names (`get_product`), for
        # readable generated clients and for the document's links.
        generate_unique_id_function=lambda route: route.name,
        # Relative: "Try it out" and generated clients call whichever host
        # served the document.
        servers=[{"url": "/", "description": "The server that serves this document"}],
        contact={"name": "Storefront API maintainers"},
        license_info={"name": "MIT", "identifier": "MIT"},
        swagger_ui_parameters={"persistAuthorization": False},
    )
    app.state.settings = settings
    app.state.database = database
    app.state.schema_head = head_revision()
    app.state.password_hasher = hasher = PasswordHasher(settings)
    app.state.token_codec = TokenCodec(settings)
    app.state.mail_dispatcher = dispatcher
    app.state.event_hub = hub

    install_problem_handlers(app)
    # The event routes before the products': /products/events is not /products/{id}.
    for router in (auth_router, account_router, users_router, events_router, products_router):
        app.include_router(router, prefix=API_PREFIX)
    install_pages(app)
    app.include_router(health_router)
    app.include_router(metrics_router)
    if settings.docs_enabled:
        install_docs(app, OPENAPI_URL)
        app.include_router(asyncapi_router)
        app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]

    # Added innermost first: a request meets them in the reverse order.
    app.add_middleware(TrailingSlashMiddleware)
    app.add_middleware(HeadMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, limit=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSProblemMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "If-Match",
                "If-None-Match",
                "X-Request-ID",
            ],
            expose_headers=[
                "ETag",
                "Idempotent-Replayed",
                "Location",
                "Retry-After",
                "X-Request-ID",
            ],
        )
    # Keyed by id(): Starlette routes define __eq__ and so are not hashable;
    # the app keeps every route alive, so the ids stay valid.
    templates = {id(c.original_route): c.path_format or "" for c in iter_route_contexts(app.routes)}
    app.add_middleware(RequestContextMiddleware, route_templates=templates)
    app.add_middleware(CacheControlMiddleware)
    app.add_middleware(
        SecurityHeadersMiddleware,
        docs_paths=DOCS_PATHS,
        docs_script_hashes=inline_script_hashes(),
        page_paths=(PAGES_PREFIX,),
    )
    if traced:
        instrument(app, database.engine)
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated document, with error bodies declared as problem+json."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
            servers=app.servers,
            contact=app.contact,
            license_info=app.license_info,
        )
        # FastAPI declares a 422 for every route with inputs; the token
        # endpoint answers a bad form with RFC 6749's 400 instead.
        form_operations = {
            (context.path_format, method.lower())
            for context in iter_route_contexts(app.routes)
            if isinstance(context.original_route, OAuth2FormRoute)
            for method in context.methods or ()
        }
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                # Said outright, not left out: no credentials are needed here.
                operation.setdefault("security", [])
                if (path, method) in form_operations:
                    operation.get("responses", {}).pop("422", None)
                for code, response in operation.get("responses", {}).items():
                    content = response.get("content", {})
                    if code.isdigit() and int(code) >= 400 and "application/json" in content:
                        content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
        schemas = schema.get("components", {}).get("schemas", {})
        if "#/components/schemas/HTTPValidationError" not in json.dumps(schema["paths"]):
            # FastAPI's own 422 body, which this service never sends.
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
        app.openapi_schema = schema
    return app.openapi_schema


def __getattr__(name: str) -> FastAPI:
    # `app.main:app` for Gunicorn and Uvicorn, built from the environment on
    # first use, so that importing create_app (as tests do) has no side effects.
    if name != "app":
        raise AttributeError(name)
    try:
        settings = get_settings()
    except ValidationError as error:
        # One line on stderr, and the worker refuses to boot with Gunicorn's
        # "app failed to load" status, on which the arbiter stops instead of
        # restarting workers that can never boot.
        sys.stderr.write(describe_settings_error(error) + "\n")
        raise SystemExit(APP_LOAD_ERROR) from None
    configure_logging(settings)
    application = create_app(settings)
    globals()["app"] = application
    return application
