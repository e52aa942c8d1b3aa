"""The benchmark harnesses (`make bench`) still run: their smoke mode, end to end.

`BENCH_SMOKE=1 python -m bench.perf` seeds a PostgreSQL database, starts the
production command and the floor app (two workers each) and drives every
scenario for a second with wrk. It exits 0 only if both apps answered every
scenario with 2xx/3xx and no socket error. Needs wrk (Debian's; `.ci/run`
installs it) and PostgreSQL (TEST_DATABASE_URL); skipped without them.
"""

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

PROJECT_ROOT = Path(__file__).resolve().parents[2]
POSTGRES_URL = os.environ.get("TEST_DATABASE_URL")

pytestmark = [
    pytest.mark.skipif(
        shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"
    ),
    pytest.mark.skipif(
        not POSTGRES_URL, reason="the benchmark needs PostgreSQL (TEST_DATABASE_URL)"
    ),
]


def _url(database: str) -> str:
    assert POSTGRES_URL is not None
    url = make_url(POSTGRES_URL).set(drivername="postgresql", database=database)
    return url.render_as_string(hide_password=False)


async def _drop(name: str) -> None:
    connection = await asyncpg.connect(_url("postgres"))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def smoke_run(module: str, tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """`BENCH_SMOKE=1 python -m <module>` on a database of its own, dropped afterwards."""
    base = make_url(POSTGRES_URL or "").database or "storefront_test"
    name = f"{base}_{module.rpartition('.')[2]}_{os.getpid()}"
    environment = {
        **os.environ,
        "BENCH_SMOKE": "1",
        "BENCH_DATABASE_URL": _url(name),
        "BENCH_RESULTS": str(tmp_path),
        **settings,
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", module],
            cwd=PROJECT_ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
    finally:
        asyncio.run(_drop(name))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done


@pytest.mark.timeout(300)
def test_every_scenario_answers_2xx_on_the_service_and_both_floors(tmp_path: Path) -> None:
    done = smoke_run("bench.perf", tmp_path)

    report = json.loads((tmp_path / "bench-smoke-latest.json").read_text())
    scenarios = set(report["scenarios"])
    # The bare floor runs the lists, whose best SQL is not the service's.
    assert {(run["scenario"], run["app"]) for run in report["runs"]} == {
        (scenario, app) for scenario in scenarios for app in ("service", "floor")
    } | {("list_products", "bare"), ("search_products", "bare")}
    for run in report["runs"]:
        assert run["requests"] > 0, run
        assert run["errors"] == 0, run
        assert all(200 <= int(code) < 400 for code in run["statuses"]), run
    assert "PASS" in done.stdout  # the table of targets was printed


@pytest.mark.timeout(300)
def test_the_tracing_benchmark_runs_and_its_spans_arrive(tmp_path: Path) -> None:
    smoke_run("bench.tracing", tmp_path)

    report = json.loads((tmp_path / "tracing-smoke-latest.json").read_text())
    rows = report["rows"]
    assert set(rows) == {"off", "sampled out", "on"}
    assert all(row["errors"] == 0 and row["requests"] > 0 for row in rows.values()), rows
    # Exported for real (under load the SDK may drop some: its queue is bounded).
    assert report["spans_received"] > 0


@pytest.mark.timeout(300)
def test_the_events_benchmark_runs_and_every_client_gets_every_event(tmp_path: Path) -> None:
    smoke_run("bench.events", tmp_path)

    report = json.loads((tmp_path / "events-smoke-latest.json").read_text())
    assert report["events_received"] == report["events_expected"] > 0
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"]


def test_the_stack_benchmark_prices_each_middleware_and_each_dependency(tmp_path: Path) -> None:
    smoke_run("bench.stack", tmp_path, BENCH_STACK_REQUESTS="200")

    figures = json.loads((tmp_path / "stack-latest.json").read_text())
    # Every middleware the app installs is priced, by its class name.
    assert {"RequestContextMiddleware", "SecurityHeadersMiddleware"} <= set(
        figures["each middleware"]
    )
    assert figures["all middleware"] > figures["bare Starlette route"] > 0
    # Each hot route, on PostgreSQL, with each of its dependencies priced (the
    # figures at 200 requests are noise: only their presence is checked).
    dependencies = figures["dependencies"]
    assert dependencies["database"] == "postgresql"
    routes = dependencies["routes"]
    assert set(routes) == {
        "GET /api/v1/products/{id}",
        "GET /api/v1/products",
        "GET /api/v1/users/me",
        "PATCH /api/v1/products/{id}",
        "POST /api/v1/products",
    }
    for row in routes.values():
        assert row["whole request"] > 0
        assert row["route without its dependencies"] > 0
        assert row["dependencies"]
        assert all(isinstance(cost, float) for cost in row["dependencies"].values())
    assert set(routes["PATCH /api/v1/products/{id}"]["dependencies"]) == {
        "get_actor",
        "get_product_service",
    }
    assert set(routes["POST /api/v1/products"]["shared session"]) == {"get_session"}
    assert dependencies["events relay pass per write"] > 0
