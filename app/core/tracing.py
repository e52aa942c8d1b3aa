"""OpenTelemetry tracing, off unless the standard OTEL_* variables ask for it.

On when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set,
unless `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. Everything
else is the SDK's own reading of the environment: `OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_PROPAGATORS`,
`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_*`, ... Spans go out over OTLP/HTTP
(protobuf) from a background thread, in batches.

What is traced: every HTTP request (a server span named after the route
template, with its status), every SQL statement (the text with its
placeholders, never the parameters), every SMTP exchange, and each mail
delivery. Off, none of this is imported: no middleware, no event listener,
no thread; a log line only asks the context for a span, and finds none.

Two steps, because of Gunicorn. `instrument()` runs while the app is built,
and wires the instrumentation to OpenTelemetry's global tracer provider,
which does nothing until it is set. `start()` sets it, from the lifespan's
start-up: in each worker, after the fork, so no exporter thread or
connection is ever shared between processes.
"""

import os
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

SERVICE_NAME = "storefront-api"
# Probes and scrapes every few seconds would drown the traces that matter;
# OTEL_PYTHON_FASTAPI_EXCLUDED_URLS (or OTEL_PYTHON_EXCLUDED_URLS) replaces this.
DEFAULT_EXCLUDED_URLS = "/health/live,/health/ready,/metrics"
# Withheld from span attributes even if an operator asks to capture headers.
SENSITIVE_HEADERS = ["authorization", "proxy-authorization", "cookie", "set-cookie"]
WITHHELD = "[withheld]"


def tracing_requested(environ: Mapping[str, str] = os.environ) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def instrument(app: FastAPI, engine: AsyncEngine) -> None:
    """Adds the request span middleware to `app` and SQL spans to `engine`."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    excluded = os.environ.get("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS") or os.environ.get(
        "OTEL_PYTHON_EXCLUDED_URLS"
    )
    FastAPIInstrumentor.instrument_app(
        app,
        server_request_hook=_withhold_query,
        excluded_urls=excluded or DEFAULT_EXCLUDED_URLS,
        http_capture_headers_sanitize_fields=SENSITIVE_HEADERS,
        # A span for every ASGI message would cost more than the request.
        exclude_spans=["receive", "send"],
    )
    instrument_engine(engine)


def instrument_engine(engine: AsyncEngine) -> None:
    """A span for every statement `engine` runs."""
    from opentelemetry import metrics, trace
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    # The instrumentor's instrument(engine=...) may run once per process and
    # also patches create_engine everywhere; its EngineTracer attaches the
    # same listeners to this one engine only. The connection-usage metric
    # goes to the no-op meter: the service's pool metrics are Prometheus'.
    EngineTracer(  # type: ignore[no-untyped-call]
        trace.get_tracer("app.sql"),
        engine.sync_engine,
        metrics.NoOpMeter("app.sql").create_up_down_counter("db.client.connections.usage"),
    )


def _withhold_query(span: Any, scope: Mapping[str, Any]) -> None:
    """No query string in a span: the account pages carry one-time tokens there."""
    if not scope.get("query_string") or not span.is_recording():
        return
    attributes = getattr(span, "attributes", None) or {}
    for key in ("http.url", "url.full"):
        url = attributes.get(key)
        if isinstance(url, str):
            span.set_attribute(key, url.split("?", 1)[0])
    if "url.query" in attributes:
        span.set_attribute("url.query", WITHHELD)


class Tracing:
    """This process's tracer provider, with its OTLP exporter."""

    def __init__(self, provider: Any) -> None:
        self._provider = provider

    @classmethod
    def start(cls, service_version: str) -> "Tracing":
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create({"service.version": service_version})
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        return cls(provider)

    def shutdown(self) -> None:
        """Sends what is still queued (bounded by the exporter's timeout)."""
        self._provider.shutdown()
