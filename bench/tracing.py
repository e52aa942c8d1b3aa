"""What OpenTelemetry tracing costs: one read, with tracing off, sampled out, and on.

`make bench` runs this after bench/perf.py (`make bench-tracing` alone):

1. recreates and seeds the benchmark database as bench/perf.py does;
2. starts the production command three times, identical but for tracing:
   - off: no OTEL_* variable (the default; nothing of OpenTelemetry loaded),
   - sampled out: an endpoint set and OTEL_TRACES_SAMPLER=always_off (every
     request goes through the instrumentation, no span is recorded),
   - on: every request traced and exported over OTLP/HTTP to a receiver
     that this script runs and that decodes and counts the spans it gets;
3. drives GET /api/v1/products/{id} with wrk against each in turn,
   BENCH_ALTERNATIONS times, and prints the medians: req/s, p50, p99 and the
   workers' CPU per request, each against "off".

Settings: BENCH_DURATION, BENCH_CONNECTIONS (the first count is used),
BENCH_WORKERS, BENCH_ALTERNATIONS, BENCH_DATABASE_URL, BENCH_RESULTS,
BENCH_SMOKE, as for bench/perf.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench import perf, production, seed

SCENARIO = next(s for s in perf.SCENARIOS if s.name == "get_product")
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


class Receiver:
    """An OTLP/HTTP trace receiver that counts the spans it is sent."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        self.spans = 0
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the name http.server calls
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest.FromString(body)
                count = sum(
                    len(scope.spans)
                    for resource in request.resource_spans
                    for scope in resource.scope_spans
                )
                with lock:
                    receiver.spans += count
                self.send_response(200)  # an empty ExportTraceServiceResponse
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def variants(base: dict[str, str], endpoint: str) -> dict[str, dict[str, str]]:
    off = {k: v for k, v in base.items() if not k.startswith("OTEL_")}
    traced = {**off, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "bench"}
    return {
        "off": off,
        "sampled out": {**traced, "OTEL_TRACES_SAMPLER": "always_off"},
        "on": {**traced, "OTEL_TRACES_SAMPLER": "always_on"},
    }


def run(config: perf.Config) -> dict[str, Any]:
    connections = config.connections[0]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    config.results.mkdir(parents=True, exist_ok=True)
    log_path = config.results / f"tracing-{stamp}.log"
    secret_key = secrets.token_urlsafe(48)
    base = production.environment(config.database_url, "WARNING", SECRET_KEY=secret_key)
    receiver = Receiver()
    servers: dict[str, perf.Server] = {}
    figures: dict[str, list[dict[str, Any]]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-tracing-") as directory:
            data = Path(directory)
            fixtures = perf.Fixtures(config, secret_key, data)
            asyncio.run(seed.recreate_database(config.database_url))
            with log_path.open("a") as log:
                production.migrate(base, log)
            asyncio.run(seed.seed(config.database_url, users=perf.USERS, products=perf.PRODUCTS))
            for name, environment in variants(base, receiver.endpoint).items():
                # perf.Server names its two apps; all three here run the service.
                servers[name] = perf.Server.start("service", environment, config.workers, log_path)
            for server in servers.values():
                server.wait_until_ready(config.workers)
            asyncio.run(fixtures.refresh(SCENARIO))
            for alternation in range(1, config.alternations + 1):
                for name, server in servers.items():
                    tag = f"t{alternation}{secrets.token_hex(3)}"
                    result, _, cpu = perf.run_wrk(
                        config, SCENARIO, server, connections, config.duration, data, tag
                    )
                    run = perf.summarise_wrk(result)
                    run["cpu_ms_per_request"] = round(1000 * sum(cpu) / max(run["requests"], 1), 3)
                    figures.setdefault(name, []).append(run)
                    perf.say(
                        f"tracing {name:<12} #{alternation}: {run['rps']:>8.1f} req/s  p50 "
                        f"{run['p50_ms']:>6.1f} ms  p99 {run['p99_ms']:>6.1f} ms  CPU "
                        f"{run['cpu_ms_per_request']:.3f} ms/request  errors {run['errors']}"
                    )
    finally:
        for server in servers.values():
            server.stop()
        receiver.close()
    return summarise(figures, receiver.spans, connections, config)


def summarise(
    figures: dict[str, list[dict[str, Any]]], spans: int, connections: int, config: perf.Config
) -> dict[str, Any]:
    rows = {}
    for name, runs in figures.items():
        rows[name] = {
            key: round(statistics.median(run[key] for run in runs), 3)
            for key in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request")
        } | {
            "errors": sum(run["errors"] for run in runs),
            "requests": sum(r["requests"] for r in runs),
        }
    off = rows["off"]
    for row in rows.values():
        row["rps_vs_off"] = perf._ratio(row["rps"], off["rps"])
        row["cpu_vs_off"] = perf._ratio(row["cpu_ms_per_request"], off["cpu_ms_per_request"])
    return {
        "scenario": SCENARIO.title,
        "connections": connections,
        "duration_s": config.duration,
        "alternations": config.alternations,
        "workers": config.workers,
        "spans_received": spans,
        "requests_traced": rows["on"]["requests"],
        "rows": rows,
    }


def format_table(report: dict[str, Any]) -> str:
    head = (
        f"{'tracing':<12}{'req/s':>9}{'p50':>7}{'p99':>7}{'CPU ms/req':>11}{'req/s':>7}{'CPU':>6}"
    )
    lines = [f"{report['scenario']}, {report['connections']} connections; ratios to off", head]
    for name, row in report["rows"].items():
        lines.append(
            f"{name:<12}{row['rps']:>9.1f}{row['p50_ms']:>7.1f}{row['p99_ms']:>7.1f}"
            f"{row['cpu_ms_per_request']:>11.3f}{row['rps_vs_off']:>7.2f}{row['cpu_vs_off']:>6.2f}"
        )
    lines.append(
        f"spans received: {report['spans_received']}, "
        f"for {report['requests_traced']} requests traced"
    )
    return "\n".join(lines)


def main() -> int:
    try:
        config = perf.Config.from_environment()
        report = run(config)
    except (perf.BenchError, seed.SeedError, production.ProductionError) as error:
        print(f"bench tracing: could not run: {error}", file=sys.stderr)
        return 2
    print("\n" + format_table(report), flush=True)
    text = json.dumps(report, indent=2) + "\n"
    name = "tracing-smoke-latest.json" if config.smoke else "tracing-latest.json"
    (config.results / name).write_text(text)
    errors = sum(row["errors"] for row in report["rows"].values())
    if errors or report["spans_received"] == 0:
        print("bench tracing: FAILED: errors, or no span reached the receiver", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.chdir(perf.ROOT)
    sys.exit(main())
