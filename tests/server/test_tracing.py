"""OpenTelemetry tracing through the production command, into a real OTLP/HTTP receiver.

On (OTEL_EXPORTER_OTLP_ENDPOINT set): a request's server span, named after
its route template and carrying its status, continues the caller's W3C
trace; its SQL statements and the SMTP exchange of the mail it caused are
spans of the same trace, and the request's JSON log lines name that trace.
Off (the default, or OTEL_SDK_DISABLED=true): nothing is instrumented and
nothing is sent.
"""

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tests.mailbox import Inbox
from tests.otlp import Collector, ReceivedSpan
from tests.server.conftest import Server, server_environment, start_server
from tests.server.test_mail import smtp_environment

PASSWORD = "a traced passphrase"


def tracing_environment(endpoint: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_SERVICE_NAME": "storefront-under-test",
        # Batches leave every 100 ms instead of every 5 s.
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        # Only the request's own pass sends the mail (no sweep mid-test).
        "MAIL_POLL_SECONDS": "3600",
    }


@pytest.fixture
def traced_server(
    database_url: str,
    tmp_path: Path,
    otlp_receiver: tuple[Collector, str],
    inbox: tuple[Inbox, int],
) -> Iterator[Server]:
    _, endpoint = otlp_receiver
    _, smtp_port = inbox
    environment = server_environment(
        database_url,
        tmp_path / "data",
        **tracing_environment(endpoint),
        **smtp_environment(smtp_port),
    )
    server = start_server(environment, tmp_path / "server.log")
    yield server
    server.stop()


def new_traceparent() -> tuple[str, str, str]:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{parent_id}-01", trace_id, parent_id


def descends_from(span: ReceivedSpan, ancestor: ReceivedSpan, spans: list[ReceivedSpan]) -> bool:
    by_id = {s.span_id: s for s in spans}
    current: ReceivedSpan | None = span
    while current is not None and current.parent_span_id:
        if current.parent_span_id == ancestor.span_id:
            return True
        current = by_id.get(current.parent_span_id)
    return False


def complete(trace: list[ReceivedSpan], caller_span: str) -> bool:
    ids = {s.span_id for s in trace} | {caller_span}
    smtp_sent = any(s.name == "SMTP send" for s in trace)
    return smtp_sent and all(s.parent_span_id in ids for s in trace)


def server_span(spans: list[ReceivedSpan]) -> ReceivedSpan:
    [span] = [s for s in spans if s.kind == "SERVER"]
    return span


def test_a_request_its_sql_and_its_mail_are_one_trace_that_continues_the_callers(
    traced_server: Server, otlp_receiver: tuple[Collector, str], inbox: tuple[Inbox, int]
) -> None:
    collector, _ = otlp_receiver
    handler, _ = inbox
    traceparent, trace_id, caller_span = new_traceparent()

    response = httpx.post(
        f"{traced_server.base_url}/api/v1/users",
        json={"username": "traced", "email": "traced@example.com", "password": PASSWORD},
        headers={"traceparent": traceparent},
        timeout=30,
    )

    assert response.status_code == 201, response.text
    handler.wait_for(1)
    # Spans arrive in batches as they end, parents after their children: wait
    # for the SMTP span and for every span's parent.
    spans = collector.wait_for(lambda _: complete(collector.trace(trace_id), caller_span))
    trace = [s for s in spans if s.trace_id == trace_id]
    request = server_span(trace)
    assert request.name == "POST /api/v1/users"
    assert request.parent_span_id == caller_span
    assert request.service == "storefront-under-test"
    assert request.attributes["http.route"] == "/api/v1/users"
    assert request.attributes["http.status_code"] == 201
    sql = [s for s in trace if "db.statement" in s.attributes]
    assert any(s.attributes["db.statement"].startswith("INSERT INTO users") for s in sql)
    assert all(descends_from(s, request, trace) for s in sql)
    [smtp] = [s for s in trace if s.name == "SMTP send"]
    assert smtp.kind == "CLIENT"
    assert smtp.status != "ERROR"
    assert descends_from(smtp, request, trace)
    # Statements are sent with their placeholders, never with the values.
    assert not any(PASSWORD in str(s.attributes) for s in spans)
    assert not any("traced@example.com" in str(s.attributes) for s in sql)

    request_id = response.headers["X-Request-ID"]
    lines = [r for r in traced_server.log_records() if r.get("request_id") == request_id]
    assert {r["logger"] for r in lines} >= {"app.access"}
    assert {r.get("trace_id") for r in lines} == {trace_id}


def test_routes_are_named_by_template_with_status_and_a_new_trace_without_traceparent(
    traced_server: Server, otlp_receiver: tuple[Collector, str]
) -> None:
    collector, _ = otlp_receiver

    missing = httpx.get(f"{traced_server.base_url}/api/v1/products/987654321", timeout=10)
    probe = httpx.get(f"{traced_server.base_url}/health/ready", timeout=10)

    assert missing.status_code == 404
    assert probe.status_code == 200
    [record] = [
        r
        for r in traced_server.log_records()
        if r.get("request_id") == missing.headers["X-Request-ID"] and r["logger"] == "app.access"
    ]
    trace_id = record["trace_id"]
    collector.wait_for(lambda _: any(s.kind == "SERVER" for s in collector.trace(trace_id)))
    request = server_span(collector.trace(trace_id))
    assert request.name == "GET /api/v1/products/{product_id}"
    assert request.attributes["http.status_code"] == 404
    assert request.parent_span_id == ""
    assert record["span_id"] == request.span_id
    assert any(
        s.attributes.get("db.statement", "").startswith("SELECT") for s in collector.trace(trace_id)
    )
    # Probes every few seconds would drown the rest: not traced.
    time.sleep(0.5)
    assert not any("/health" in s.name for s in collector.snapshot())


def test_a_query_string_never_reaches_a_span(
    traced_server: Server, otlp_receiver: tuple[Collector, str]
) -> None:
    collector, _ = otlp_receiver
    token = secrets.token_urlsafe(32)
    traceparent, trace_id, _ = new_traceparent()

    page = httpx.get(
        f"{traced_server.base_url}/account/reset-password",
        params={"token": token},
        headers={"traceparent": traceparent},
        timeout=10,
    )

    assert page.status_code == 200
    collector.wait_for(lambda _: any(s.kind == "SERVER" for s in collector.trace(trace_id)))
    request = server_span(collector.trace(trace_id))
    assert request.name == "GET /account/reset-password"
    assert token not in str(collector.snapshot())
    assert request.attributes["http.url"].endswith("/account/reset-password")


def test_disabled_by_otel_sdk_disabled_nothing_is_sent(
    database_url: str, tmp_path: Path, otlp_receiver: tuple[Collector, str]
) -> None:
    collector, endpoint = otlp_receiver
    environment = server_environment(
        database_url,
        tmp_path / "data",
        **tracing_environment(endpoint),
        OTEL_SDK_DISABLED="true",
    )
    server = start_server(environment, tmp_path / "server.log")
    try:
        traceparent, _, _ = new_traceparent()
        response = httpx.get(
            f"{server.base_url}/api/v1/products",
            headers={"traceparent": traceparent},
            timeout=10,
        )
        assert response.status_code == 200
        time.sleep(0.5)  # five export intervals
    finally:
        server.stop()

    assert collector.requests == 0
    serving = [r for r in server.log_records() if r.get("message") == "serving"]
    assert serving
    assert {r["tracing"] for r in serving} == {"off"}
    assert not any("trace_id" in r for r in server.log_records())


def test_off_by_default_nothing_is_instrumented(app: FastAPI) -> None:
    """Without OTEL_* variables: no tracing middleware, no listener on the engine."""
    assert not getattr(app, "_is_instrumented_by_opentelemetry", False)
    engine = app.state.database.engine.sync_engine
    assert not any(
        "opentelemetry" in getattr(listener, "__module__", "")
        for listener in engine.dispatch.before_cursor_execute
    )
