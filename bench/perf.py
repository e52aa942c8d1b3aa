"""Throughput and latency of the service against a floor app doing the same SQL.

`make bench` (or `python -m bench.perf` from the repo root):

1. drops, recreates and migrates a PostgreSQL database (`python -m app
   migrate`) and seeds 1,000 users and 10,000 products with COPY
   (bench/seed.py: deterministic; one argon2 hash, computed once at the
   production cost, stored for every user);
2. starts the production command, `gunicorn -c gunicorn.conf.py app.main:app
   --workers 2` with ENVIRONMENT=production, a generated SECRET_KEY and
   LOG_LEVEL=WARNING (at INFO the service writes one access line per request,
   and the figures would be mostly about logging), and the floor app
   (bench/floor/app.py: bare Starlette and asyncpg sending the same SQL) under
   Gunicorn with the same Uvicorn workers, count and pool sizes, twice: the
   floor, with the service's SQL, and the bare floor, with one statement per
   read (for the reads whose best SQL differs from the service's);
3. for each scenario and connection count, drives load with wrk (Lua scripts
   in bench/wrk/) against the service, then the floor(s), then the service,
   ... (ALTERNATIONS times each), so that all see the same machine;
4. prints a table of medians (req/s, p50, p99, errors, the service's ratios
   to both floors) with PASS/FAIL against the targets (reads against the
   bare floor, writes against the floor), and writes
   `bench/results/bench-<UTC time>.json`, `bench-latest.json` and
   `bench-latest.png`.

A missed target is reported, not fatal: the figures are the deliverable. The
exit status is 1 when the service had errors at 64 connections (or, in smoke
mode, when any scenario of either app answered anything but 2xx/3xx), and 2
when the benchmark could not run.

Settings, from the environment:
  BENCH_DURATION       seconds per run (default 10)
  BENCH_CONNECTIONS    connection counts, comma-separated (default 16,64)
  BENCH_WORKERS        Gunicorn workers of each app (default 2)
  BENCH_ALTERNATIONS   service/floor alternations per scenario (default 3)
  BENCH_THREADS        wrk threads per run (default 2)
  BENCH_SCENARIOS      only these scenarios, comma-separated (default: all)
  BENCH_DATABASE_URL   the database to recreate
                       (default postgresql://postgres@127.0.0.1:5432/storefront_bench)
  BENCH_SMOKE=1        CI's check: 1 s runs, one alternation, 16 connections, no
                       warm-up; fails unless every run of both apps got only 2xx/3xx
  BENCH_RESULTS        where to write (default bench/results)
  BENCH_PROFILE=1      also sample the service's workers with py-spy during its first
                       run of each scenario (the figures of that run are then slower),
                       and print where the CPU went; the collapsed stacks are kept in
                       bench/results/profile-<UTC time>/ (see `profile_summary`)
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/perf.py` puts bench/ there, not the repo
    sys.path.insert(0, str(ROOT))

from bench import production, seed  # noqa: E402
from bench.floor import sql as floor_statements  # noqa: E402

WRK_DIR = ROOT / "bench" / "wrk"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/storefront_bench"
USERS = seed.USERS
PRODUCTS = seed.PRODUCTS
LOGIN_CONNECTIONS = 8
WRK_TIMEOUT = "10s"  # a request slower than this is a socket error (timeout)
STORM_LEAD_SECONDS = 1.0  # the login storm starts this long before the reads
# Targets, from the issue.
# Reads against the bare floor (best SQL), writes against the same-SQL floor.
READ_RATIO = 0.5
WRITE_RATIO = 0.5
P99_FACTOR = 2.0
STORM_P99_FACTOR = 3.0
ZERO_ERRORS_AT = 64

# The floor sends the service's SQL; the bare floor, for the reads in
# bench/floor/sql.py's BARE, one statement each (elsewhere it is the floor).
App = Literal["service", "floor", "bare"]
APPS: tuple[App, ...] = ("service", "floor", "bare")


def apps_for(scenario: str) -> tuple[App, ...]:
    return APPS if scenario in floor_statements.BARE else ("service", "floor")


Kind = Literal["read", "write"]


class BenchError(Exception):
    """The benchmark could not run (as opposed to: it ran and missed a target)."""


# --- Scenarios ----------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    kind: Kind  # which throughput target applies
    script: str
    path: str = "/"
    connections: int | None = None  # fixed, whatever BENCH_CONNECTIONS says
    writes: bool = False  # rows to clean up after each run
    storm: bool = False  # measured while LOGIN_CONNECTIONS clients log in


SCENARIOS = (
    Scenario("health", "GET /health/live", "read", "static.lua", "/health/live"),
    Scenario("get_product", "GET /api/v1/products/{id}", "read", "get_product.lua"),
    Scenario("list_products", "GET /api/v1/products", "read", "static.lua", "/api/v1/products"),
    Scenario(
        "search_products",
        f"GET /api/v1/products?q={seed.SEARCH_TERM}",
        "read",
        "static.lua",
        f"/api/v1/products?q={seed.SEARCH_TERM}",
    ),
    Scenario("users_me", "GET /api/v1/users/me", "read", "users_me.lua"),
    Scenario("create_product", "POST /api/v1/products", "write", "create_product.lua", writes=True),
    Scenario(
        "patch_product",
        "PATCH /api/v1/products/{id} (If-Match)",
        "write",
        "patch_product.lua",
        writes=True,
    ),
    Scenario(
        "login",
        "POST /api/v1/auth/token",
        "write",
        "login.lua",
        connections=LOGIN_CONNECTIONS,
        writes=True,
    ),
    # 90% reads: the read target applies.
    Scenario("mixed", "mixed, 90% reads", "read", "mixed.lua", writes=True),
    Scenario(
        "login_storm",
        f"GET /api/v1/products/{{id}} during {LOGIN_CONNECTIONS} logins",
        "read",
        "get_product.lua",
        writes=True,
        storm=True,
    ),
)


# --- Settings -----------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    duration: float
    connections: tuple[int, ...]
    workers: int
    alternations: int
    threads: int
    scenarios: tuple[str, ...]
    database_url: str
    smoke: bool
    warmup: float
    results: Path
    profile: bool

    @classmethod
    def from_environment(cls) -> Config:
        smoke = os.environ.get("BENCH_SMOKE", "") not in ("", "0")
        names = tuple(s.name for s in SCENARIOS)
        chosen = tuple(_list("BENCH_SCENARIOS", ",".join(names)))
        unknown = set(chosen) - set(names)
        if unknown:
            raise BenchError(f"BENCH_SCENARIOS: unknown {sorted(unknown)}; known: {names}")
        connections = tuple(int(c) for c in _list("BENCH_CONNECTIONS", "16" if smoke else "16,64"))
        config = cls(
            duration=_number("BENCH_DURATION", 1 if smoke else 10),
            connections=connections,
            workers=int(_number("BENCH_WORKERS", 2)),
            alternations=int(_number("BENCH_ALTERNATIONS", 1 if smoke else 3)),
            threads=int(_number("BENCH_THREADS", 2)),
            scenarios=chosen,
            database_url=os.environ.get("BENCH_DATABASE_URL") or DEFAULT_DATABASE_URL,
            smoke=smoke,
            warmup=0.0 if smoke else 1.0,
            results=Path(os.environ.get("BENCH_RESULTS") or ROOT / "bench" / "results"),
            profile=os.environ.get("BENCH_PROFILE", "") not in ("", "0"),
        )
        if min(config.connections) < 1 or config.duration < 1:
            raise BenchError("BENCH_CONNECTIONS and BENCH_DURATION must be at least 1")
        return config

    @property
    def patch_products(self) -> int:
        """Products the PATCH scripts own: several per connection, so one is always free."""
        return max(256, 4 * max(self.connections))


def _list(name: str, default: str) -> list[str]:
    return [item.strip() for item in (os.environ.get(name) or default).split(",") if item.strip()]


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BenchError(f"{name} must be a number, not {raw!r}") from None
    if value <= 0:
        raise BenchError(f"{name} must be above 0")
    return value


# --- The two apps ---------------------------------------------------------------


def floor_environment(service: dict[str, str], workers: int) -> dict[str, str]:
    """The service's environment, with its workers' pool sizes spelled out for the floor."""
    from app.core.config import Settings

    shares = Settings.model_construct(
        db_max_connections=int(service["DB_MAX_CONNECTIONS"]),
        db_pool_size=None,
        db_max_overflow=None,
        web_concurrency=workers,
    )
    pool_size, max_overflow = shares.pool_limits
    return {**service, "DB_POOL_SIZE": str(pool_size), "DB_MAX_OVERFLOW": str(max_overflow)}


@dataclass
class Server:
    name: App
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    bare_url: str | None = None  # the floor's: where it is the bare floor

    @classmethod
    def start(cls, name: App, environment: dict[str, str], workers: int, log_path: Path) -> Server:
        """The service, or the floor; the floor also listens on a second port, where
        it is the bare floor (one process and one pool for both: three pools of
        DB_MAX_CONNECTIONS would not fit PostgreSQL's default max_connections)."""
        gunicorn = Path(sys.executable).with_name("gunicorn")
        port = production.free_port()
        command = [str(gunicorn) if gunicorn.exists() else shutil.which("gunicorn") or "gunicorn"]
        bare_port = 0
        if name == "service":
            command += ["-c", "gunicorn.conf.py", "app.main:app"]
        else:
            bare_port = production.free_port()
            environment = {**environment, "FLOOR_BARE_PORT": str(bare_port)}
            command += ["--bind", f"127.0.0.1:{bare_port}"]
            command += [
                *("bench.floor.app:app", "--worker-class", "uvicorn_worker.UvicornWorker"),
                *("--keep-alive", "5", "--log-level", "warning"),
                # A socket per worker, as gunicorn.conf.py gives the service.
                "--reuse-port",
            ]
        command += ["--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
        with log_path.open("ab") as log:
            process = subprocess.Popen(  # noqa: S603
                command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT
            )
        bare_url = None if name == "service" else f"http://127.0.0.1:{bare_port}"
        return cls(name, process, f"http://127.0.0.1:{port}", log_path, bare_url)

    def bare(self) -> Server:
        """The floor's second address, where it sends the bare SQL."""
        if self.bare_url is None:
            raise BenchError(f"the {self.name} has no bare address")
        return Server("bare", self.process, self.bare_url, self.log_path)

    def worker_pids(self) -> list[int]:
        return sorted(pid for pid, parent in _parents() if parent == self.process.pid)

    def wait_until_ready(self, workers: int, timeout: float = 60.0) -> None:
        """Until /health/live answers and every worker has finished starting (its CPU time
        stands still: importing the app is what a starting worker spends it on)."""
        deadline = time.monotonic() + timeout
        previous: dict[int, float | None] = {}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(
                    f"the {self.name} exited with {self.process.returncode}; see {self.log_path}"
                )
            time.sleep(0.3)
            if not _answers(f"{self.base_url}/health/live"):
                continue
            pids = self.worker_pids()
            now = {pid: cpu_seconds(pid) for pid in pids}
            if len(pids) >= workers and now == previous:
                return
            previous = now
        raise BenchError(
            f"the {self.name} was not ready within {timeout:.0f} s; see {self.log_path}"
        )

    def wait_until_idle(self, timeout: float = 10.0) -> None:
        """Until the workers stop spending CPU: requests that wrk left behind have finished."""
        deadline = time.monotonic() + timeout
        pids = self.worker_pids()
        previous = [cpu_seconds(pid) or 0.0 for pid in pids]
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = [cpu_seconds(pid) or 0.0 for pid in pids]
            if all(b - a < 0.03 for a, b in zip(previous, now, strict=True)):
                return
            previous = now

    def stop(self, timeout: float = 30.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310  (our own server)
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def _parents() -> list[tuple[int, int]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        found.append((int(entry.name), int(stat.rpartition(")")[2].split()[1])))
    return found


def cpu_seconds(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- Data the scripts read ------------------------------------------------------


class Fixtures:
    """Files in a temporary directory that the Lua scripts read: tokens, PATCH products."""

    def __init__(self, config: Config, secret_key: str, directory: Path) -> None:
        from app.core.config import Settings
        from app.core.security import TokenCodec

        self.config = config
        self.directory = directory
        settings = Settings(
            environment="production",
            secret_key=secret_key,
            database_url=config.database_url,
            _env_file=None,
        )
        self.codec = TokenCodec(settings)
        (directory / "users.txt").write_text(f"{USERS}\n")
        (directory / "password.txt").write_text(f"{seed.PASSWORD}\n")
        (directory / "search.txt").write_text(f"{seed.SEARCH_TERM}\n")

    def token(self, user_id: int) -> str:
        return self.codec.issue("access", user_id, 1).token

    async def refresh(self, scenario: Scenario) -> None:
        """Fresh tokens (they last 15 minutes; a whole run takes longer), and the current
        versions of the PATCH products, read from the database before each run."""
        import asyncpg

        tokens = [self.token(user_id) for user_id in range(1, USERS + 1)]
        (self.directory / "tokens.txt").write_text("\n".join(tokens) + "\n")
        if scenario.script not in ("patch_product.lua", "mixed.lua"):
            return
        connection = await asyncpg.connect(self.config.database_url)
        try:
            rows = await connection.fetch(
                "SELECT id, version, owner_id FROM products WHERE id <= $1 ORDER BY id",
                self.config.patch_products,
            )
        finally:
            await connection.close()
        lines = [f"{r['id']} {r['version']} {tokens[r['owner_id'] - 1]}" for r in rows]
        (self.directory / "patch.txt").write_text("\n".join(lines) + "\n")


async def clean_up(database_url: str) -> None:
    """Back to the seeded rows after a run that wrote: the same table for the next app."""
    import asyncpg

    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(f"DELETE FROM products WHERE id > {PRODUCTS}")  # noqa: S608  (a constant)
        # DELETE, not TRUNCATE: no table lock for a request that is still finishing.
        await connection.execute("DELETE FROM refresh_families")  # its tokens go with it
        await connection.execute("DELETE FROM login_failures")
        await connection.execute("VACUUM ANALYZE products")
    finally:
        await connection.close()


# --- One wrk run ----------------------------------------------------------------


@dataclass
class Run:
    scenario: str
    app: App
    connections: int
    alternation: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[str, int]
    socket_errors: dict[str, int]
    errors: int  # answers outside 2xx/3xx plus socket errors
    worker_cpu_s: list[float]
    load_average: float
    storm_logins: dict[str, Any] | None = None  # the login clients' own figures

    @property
    def bad_statuses(self) -> int:
        return sum(n for code, n in self.statuses.items() if not 200 <= int(code) < 400)


def wrk_command(
    config: Config, script: str, connections: int, seconds: float, url: str, tag: str, data: Path
) -> list[str]:
    threads = max(1, min(config.threads, connections))
    return [
        *("wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s"),
        *("--timeout", WRK_TIMEOUT, "-s", script, url, "--"),
        *(str(data), str(threads), tag, str(PRODUCTS)),
    ]


def parse_wrk(output: str, command: list[str]) -> dict[str, Any]:
    for line in output.splitlines():
        if line.startswith("BENCH_RESULT "):
            parsed: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
            return parsed
    raise BenchError(f"wrk printed no result: {' '.join(command)}\n{output[-2000:]}")


def _launch(command: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603
        command, cwd=WRK_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _finish(process: subprocess.Popen[str], command: list[str], seconds: float) -> dict[str, Any]:
    try:
        output, _ = process.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    if process.returncode != 0:
        raise BenchError(f"wrk failed ({process.returncode}): {' '.join(command)}\n{output}")
    return parse_wrk(output, command)


def run_wrk(
    config: Config,
    scenario: Scenario,
    server: Server,
    connections: int,
    seconds: float,
    data: Path,
    tag: str,
    profile_to: Path | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None, list[float]]:
    """The scenario's figures, the storm's login figures (or None), and each worker's CPU.

    With `profile_to`, py-spy samples every worker for the run into files there.
    """
    pids = server.worker_pids()
    before = [cpu_seconds(pid) or 0.0 for pid in pids]
    spies = []
    if profile_to is not None:
        profile_to.mkdir(parents=True, exist_ok=True)
        spy = Path(sys.executable).with_name("py-spy")
        for pid in pids:
            spies.append(
                subprocess.Popen(  # noqa: S603
                    [
                        *(str(spy), "record", "--pid", str(pid), "--format", "raw"),
                        *("--nolineno", "--nonblocking", "--rate", "200"),
                        *("--duration", f"{seconds:g}", "--output", str(profile_to / f"{pid}.txt")),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
    storm: subprocess.Popen[str] | None = None
    storm_command: list[str] = []
    lead = STORM_LEAD_SECONDS / 2 if config.smoke else STORM_LEAD_SECONDS
    if scenario.storm:
        storm_seconds = seconds + 2 * lead
        storm_command = wrk_command(
            config,
            "login.lua",
            LOGIN_CONNECTIONS,
            storm_seconds,
            server.base_url + "/",
            tag,
            data,
        )
        storm = _launch(storm_command)
        time.sleep(lead)
    command = wrk_command(
        config, scenario.script, connections, seconds, server.base_url + scenario.path, tag, data
    )
    result = _finish(_launch(command), command, seconds)
    logins = _finish(storm, storm_command, seconds + 2) if storm is not None else None
    after = [cpu_seconds(pid) or 0.0 for pid in pids]
    for spy_process in spies:
        spy_process.wait(30)
    server.wait_until_idle(timeout=1.0 if config.smoke else 10.0)
    return result, logins, [round(b - a, 2) for a, b in zip(before, after, strict=True)]


def summarise_wrk(result: dict[str, Any]) -> dict[str, Any]:
    seconds = result["duration_us"] / 1e6
    statuses = {str(k): int(v) for k, v in result["statuses"].items()}
    socket_errors = {k: int(v) for k, v in result["socket_errors"].items()}
    bad = sum(n for code, n in statuses.items() if not 200 <= int(code) < 400)
    latency = result["latency_us"]
    return {
        "requests": int(result["requests"]),
        "seconds": round(seconds, 3),
        "rps": round(result["requests"] / seconds, 1) if seconds else 0.0,
        "p50_ms": round(latency["p50"] / 1000, 2),
        "p90_ms": round(latency["p90"] / 1000, 2),
        "p99_ms": round(latency["p99"] / 1000, 2),
        "max_ms": round(latency["max"] / 1000, 2),
        "statuses": statuses,
        "socket_errors": socket_errors,
        "errors": bad + sum(socket_errors.values()),
    }


# --- Summaries and targets ------------------------------------------------------


@dataclass
class Side:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # over every alternation
    statuses: dict[str, int]


@dataclass
class Row:
    scenario: str
    title: str
    kind: Kind
    connections: int
    service: Side
    floor: Side
    rps_ratio: float
    p99_ratio: float
    # The bare floor (the floor itself where its SQL is the service's).
    bare: Side
    bare_rps_ratio: float
    bare_p99_ratio: float
    # Login storm only: the same read's p99 without the storm, and the ratio.
    idle_p99_ms: dict[str, float] | None = None
    storm_p99_ratio: dict[str, float] | None = None
    targets: list[dict[str, Any]] = field(default_factory=list)


def _side(runs: list[Run]) -> Side:
    statuses: dict[str, int] = {}
    for run in runs:
        for code, n in run.statuses.items():
            statuses[code] = statuses.get(code, 0) + n
    return Side(
        rps=round(statistics.median(r.rps for r in runs), 1),
        p50_ms=round(statistics.median(r.p50_ms for r in runs), 2),
        p99_ms=round(statistics.median(r.p99_ms for r in runs), 2),
        errors=sum(r.errors for r in runs),
        statuses=statuses,
    )


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def summarise(runs: list[Run]) -> list[Row]:
    rows = []
    for scenario in SCENARIOS:
        counts = sorted({r.connections for r in runs if r.scenario == scenario.name})
        for connections in counts:
            mine = [r for r in runs if r.scenario == scenario.name and r.connections == connections]
            service = _side([r for r in mine if r.app == "service"])
            floor = _side([r for r in mine if r.app == "floor"])
            bare_runs = [r for r in mine if r.app == "bare"]
            bare = _side(bare_runs) if bare_runs else floor
            row = Row(
                scenario=scenario.name,
                title=scenario.title,
                kind=scenario.kind,
                connections=connections,
                service=service,
                floor=floor,
                rps_ratio=_ratio(service.rps, floor.rps),
                p99_ratio=_ratio(service.p99_ms, floor.p99_ms),
                bare=bare,
                bare_rps_ratio=_ratio(service.rps, bare.rps),
                bare_p99_ratio=_ratio(service.p99_ms, bare.p99_ms),
            )
            if scenario.storm:
                idle = [
                    r for r in runs if r.scenario == "get_product" and r.connections == connections
                ]
                if idle:
                    row.idle_p99_ms = {
                        app: _side([r for r in idle if r.app == app]).p99_ms
                        for app in ("service", "floor")
                    }
                    row.storm_p99_ratio = {
                        "service": _ratio(service.p99_ms, row.idle_p99_ms["service"]),
                        "floor": _ratio(floor.p99_ms, row.idle_p99_ms["floor"]),
                    }
            row.targets = targets_of(row)
            rows.append(row)
    return rows


def targets_of(row: Row) -> list[dict[str, Any]]:
    """Reads against the bare floor (the best SQL), writes against the floor
    that sends the service's own SQL (its unit of work is the contract's)."""
    read = row.kind == "read"
    wanted = READ_RATIO if read else WRITE_RATIO
    floor = "bare floor" if read else "floor"
    rps_ratio = row.bare_rps_ratio if read else row.rps_ratio
    p99_ratio = row.bare_p99_ratio if read else row.p99_ratio
    targets = [
        {
            "target": f"req/s >= {wanted:g} x {floor}",
            "value": rps_ratio,
            "pass": rps_ratio >= wanted,
        },
        {
            "target": f"p99 <= {P99_FACTOR:g} x {floor}",
            "value": p99_ratio,
            "pass": p99_ratio <= P99_FACTOR,
        },
    ]
    if row.connections >= ZERO_ERRORS_AT:
        targets.append(
            {
                "target": f"no errors at {row.connections} connections",
                "value": row.service.errors,
                "pass": row.service.errors == 0,
            }
        )
    if row.storm_p99_ratio is not None:
        ratio = row.storm_p99_ratio["service"]
        targets.append(
            {
                "target": f"p99 during the storm <= {STORM_P99_FACTOR:g} x idle p99",
                "value": ratio,
                "pass": ratio <= STORM_P99_FACTOR,
            }
        )
    return targets


def format_table(rows: list[Row]) -> str:
    head = (
        f"{'scenario':<16}{'conns':>6} | {'service req/s':>13}{'p50':>7}{'p99':>8}{'err':>4} | "
        f"{'floor req/s':>11}{'p99':>8} | {'bare req/s':>10}{'p99':>8} | "
        f"{'/floor':>6}{'p99':>6} | {'/bare':>6}{'p99':>6} | targets"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        s, f, b = row.service, row.floor, row.bare
        marks = " ".join(
            f"{_short(t['target'])}:{'PASS' if t['pass'] else 'FAIL'}" for t in row.targets
        )
        lines.append(
            f"{row.scenario:<16}{row.connections:>6} | {s.rps:>13.1f}{s.p50_ms:>7.1f}"
            f"{s.p99_ms:>8.1f}{s.errors:>4} | {f.rps:>11.1f}{f.p99_ms:>8.1f} | "
            f"{b.rps:>10.1f}{b.p99_ms:>8.1f} | {row.rps_ratio:>6.2f}{row.p99_ratio:>6.2f} | "
            f"{row.bare_rps_ratio:>6.2f}{row.bare_p99_ratio:>6.2f} | {marks}"
        )
        if row.storm_p99_ratio is not None and row.idle_p99_ms is not None:
            lines.append(
                f"{'':<16}{'':>6}   storm p99 / idle p99: service {s.p99_ms:.1f} / "
                f"{row.idle_p99_ms['service']:.1f} = {row.storm_p99_ratio['service']:.2f}, "
                f"floor {f.p99_ms:.1f} / {row.idle_p99_ms['floor']:.1f} = "
                f"{row.storm_p99_ratio['floor']:.2f}"
            )
    return "\n".join(lines)


def _short(target: str) -> str:
    if target.startswith("req/s"):
        return "rps"
    if target.startswith("p99 during"):
        return "storm"
    if target.startswith("p99"):
        return "p99"
    return "errors"


# --- Profiles -------------------------------------------------------------------

# Where a sample's stack passes through, first match wins (outermost frames are
# the server's and Starlette's, so the buckets look from the innermost frame out).
_PROFILE_BUCKETS = (
    ("argon2 (password hashing)", ("argon2", "passlib")),
    ("JWT (python-jose)", ("jose/",)),
    ("SQL driver (asyncpg)", ("asyncpg/",)),
    ("SQLAlchemy pool (checkout, return)", ("sqlalchemy/pool/",)),
    ("SQLAlchemy ORM/Core", ("sqlalchemy/",)),
    ("Pydantic (validation, serialisation)", ("pydantic/", "pydantic_core/")),
    ("Prometheus metrics", ("prometheus_client/",)),
    ("logging", ("logging/",)),
    ("FastAPI (routing, dependencies, encoding)", ("fastapi/",)),
    ("Starlette", ("starlette/",)),
    ("the service's own code", ("app/",)),
    ("Uvicorn/httptools (HTTP)", ("uvicorn/", "httptools/", "h11/")),
    ("asyncio/uvloop", ("asyncio/", "uvloop/")),
)


def profile_summary(directory: Path, top: int = 12) -> str:
    """Where the sampled workers' CPU went: by library (innermost frame that is one of
    theirs) and the functions most often on top of the stack."""
    buckets: dict[str, int] = {}
    leaves: dict[str, int] = {}
    total = 0
    for path in directory.glob("*.txt"):
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not count_text.isdigit():
                continue
            count = int(count_text)
            frames = stack.split(";")
            total += count
            leaves[frames[-1]] = leaves.get(frames[-1], 0) + count
            bucket = "other"
            for frame in reversed(frames):
                found = next(
                    (name for name, marks in _PROFILE_BUCKETS if any(m in frame for m in marks)),
                    None,
                )
                if found is not None:
                    bucket = found
                    break
            buckets[bucket] = buckets.get(bucket, 0) + count
    if not total:
        return f"    profile {directory.name}: no samples (is py-spy allowed to attach?)"
    lines = [f"    profile {directory.name}: {total} samples of busy worker threads"]
    for name, count in sorted(buckets.items(), key=lambda item: -item[1]):
        lines.append(f"      {100 * count / total:5.1f}%  {name}")
    lines.append("      on top of the stack:")
    for frame, count in sorted(leaves.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"      {100 * count / total:5.1f}%  {frame}")
    return "\n".join(lines)


# --- The chart ------------------------------------------------------------------


def draw_chart(rows: list[Row], path: Path, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = sorted({r.connections for r in rows if r.scenario != "login"})
    figure, axes = plt.subplots(
        len(counts), 2, figsize=(15, 4.2 * len(counts)), squeeze=False, constrained_layout=True
    )
    for line, connections in enumerate(counts):
        chosen = [
            r for r in rows if r.connections == connections or (r.scenario == "login" and line == 0)
        ]
        labels = [
            r.scenario + (f"\n({r.connections} conns)" if r.scenario == "login" else "")
            for r in chosen
        ]
        positions = range(len(chosen))
        for column, (metric, unit) in enumerate((("rps", "req/s"), ("p99_ms", "p99 (ms)"))):
            axis = axes[line][column]
            service = [getattr(r.service, metric) for r in chosen]
            floor = [getattr(r.floor, metric) for r in chosen]
            bare = [getattr(r.bare, metric) for r in chosen]
            axis.bar([p - 0.27 for p in positions], service, 0.27, label="service", color="#3a6ea5")
            axis.bar(list(positions), floor, 0.27, label="floor (same SQL)", color="#c0c0c0")
            axis.bar([p + 0.27 for p in positions], bare, 0.27, label="bare floor", color="#707070")
            axis.set_yscale("log")
            axis.set_xticks(list(positions), labels, rotation=30, ha="right", fontsize=8)
            axis.set_ylabel(unit)
            ratio = "rps_ratio" if metric == "rps" else "p99_ratio"
            axis.set_title(f"{unit} at {connections} connections (label: service/floor)")
            for p, r, value in zip(positions, chosen, service, strict=True):
                axis.annotate(
                    f"{getattr(r, ratio):.2f}",
                    (p - 0.27, value),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
            axis.legend(fontsize=8)
    figure.suptitle(f"Service vs floor (medians). {subtitle}", fontsize=10)
    figure.savefig(path, dpi=90)
    plt.close(figure)


# --- The whole benchmark ----------------------------------------------------------


def _git(*args: str) -> str:
    done = subprocess.run(  # noqa: S603
        ["git", *args],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


def _wrk_version() -> str:
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)  # noqa: S607
    return (done.stdout or done.stderr).splitlines()[0] if (done.stdout or done.stderr) else ""


def check_floor_sql(database_url: str) -> dict[str, Any]:
    """Whether the floor still sends the service's SQL (`python -m bench.capture_sql`)."""
    name = seed.database_name(database_url) + "_sql"
    done = subprocess.run(
        [sys.executable, "-m", "bench.capture_sql"],
        cwd=ROOT,
        env={**os.environ, "BENCH_SQL_DATABASE_URL": database_url.rsplit("/", 1)[0] + "/" + name},
        capture_output=True,
        text=True,
        check=False,
    )
    differing = re.findall(r"^== (\w+): DIFFERS", done.stdout, re.MULTILINE)
    if done.returncode not in (0, 1):
        return {"checked": False, "error": (done.stdout + done.stderr)[-1000:]}
    return {"checked": True, "same": not differing, "differing": differing}


def _plan(config: Config) -> list[tuple[Scenario, int]]:
    plan = []
    for scenario in SCENARIOS:
        if scenario.name not in config.scenarios:
            continue
        if scenario.connections is not None:
            plan.append((scenario, scenario.connections))
        else:
            plan.extend((scenario, connections) for connections in config.connections)
    return plan


_START = time.monotonic()


def say(message: str) -> None:
    print(f"{time.monotonic() - _START:6.1f}s {message}" if message else "", flush=True)


def benchmark(config: Config) -> int:
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed: `apt-get install wrk` (make bench does it)")
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    config.results.mkdir(parents=True, exist_ok=True)
    prefix = "bench-smoke" if config.smoke else "bench"
    log_path = config.results / f"{prefix}-{stamp}.log"
    load_start = os.getloadavg()
    say(
        f"bench: {'SMOKE, ' if config.smoke else ''}{config.duration:g} s per run, "
        f"connections {','.join(map(str, config.connections))} (login: {LOGIN_CONNECTIONS}), "
        f"{config.workers} workers, {config.alternations} alternation(s); "
        f"load average {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}"
    )
    say(
        "bench: the service runs with LOG_LEVEL=WARNING so that its access log (a line per "
        "request at INFO) does not dominate the figures"
    )

    secret_key = secrets.token_urlsafe(48)
    environment = production.environment(config.database_url, "WARNING", SECRET_KEY=secret_key)
    floor_sql: dict[str, Any] = {"checked": False, "error": "not checked in smoke mode"}
    if not config.smoke:
        floor_sql = check_floor_sql(config.database_url)
        if not floor_sql.get("same"):
            say(
                "bench: WARNING: the floor's SQL is not the service's "
                f"({floor_sql.get('differing') or floor_sql.get('error')}): "
                "run `python -m bench.capture_sql` and update bench/floor/"
            )
    servers: dict[App, Server] = {}
    runs: list[Run] = []
    exit_status = 0
    with tempfile.TemporaryDirectory(prefix="bench-") as directory:
        data = Path(directory)
        fixtures = Fixtures(config, secret_key, data)
        try:
            t0 = time.monotonic()
            asyncio.run(seed.recreate_database(config.database_url))
            # The apps start (importing takes seconds) while the database is filled:
            # neither needs the tables before its first request.
            servers["service"] = Server.start("service", environment, config.workers, log_path)
            servers["floor"] = Server.start(
                "floor", floor_environment(environment, config.workers), config.workers, log_path
            )
            servers["bare"] = servers["floor"].bare()
            with log_path.open("a") as log:
                production.migrate(environment, log)
            seeded = asyncio.run(seed.seed(config.database_url, users=USERS, products=PRODUCTS))
            say(
                f"bench: seeded {seeded.users} users and {seeded.products} products in "
                f"{time.monotonic() - t0:.1f} s (one argon2 hash at the production cost, "
                "computed once and stored for every user; "
                f"{seeded.search_matches} products match q={seed.SEARCH_TERM})"
            )
            for server in servers.values():
                if server.name != "bare":
                    server.wait_until_ready(config.workers)
            urls = {app: server.base_url for app, server in servers.items()}
            say(f"bench: {', '.join(f'{app} at {url}' for app, url in urls.items())}")
            profiles = config.results / f"profile-{stamp}" if config.profile else None
            runs = drive(config, fixtures, servers, data, profiles)
        finally:
            for server in servers.values():
                if server.name != "bare":  # the floor's process
                    server.stop()
    finished = datetime.now(UTC)
    load_end = os.getloadavg()

    rows = summarise(runs)
    table = format_table(rows)
    print(f"\n{table}", flush=True)
    failed = [
        f"{row.scenario}@{row.connections}: {t['target']} ({t['value']})"
        for row in rows
        for t in row.targets
        if not t["pass"]
    ]
    say("")
    say(
        f"targets: {sum(len(r.targets) for r in rows) - len(failed)} PASS, {len(failed)} FAIL"
        + "".join(f"\n  FAIL {line}" for line in failed)
    )
    say(
        f"load average at the end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f} "
        f"(2 cores shared with other work: the figures are noisy)"
    )

    errors_at_64 = [r for r in rows if r.connections >= ZERO_ERRORS_AT and r.service.errors]
    if errors_at_64:
        exit_status = 1
        say("bench: FAILED: the service had errors at 64 connections (see statuses in the JSON)")
    if config.smoke:
        bad = [r for r in runs if r.errors or not r.requests]
        if bad:
            exit_status = 1
            for run in bad:
                say(
                    f"bench smoke: FAILED: {run.scenario} on the {run.app}: statuses "
                    f"{run.statuses}, socket errors {run.socket_errors}"
                )

    report = {
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "smoke": config.smoke,
        "settings": {
            "duration_s": config.duration,
            "connections": list(config.connections),
            "login_connections": LOGIN_CONNECTIONS,
            "workers": config.workers,
            "alternations": config.alternations,
            "wrk_threads": config.threads,
            "warmup_s": config.warmup,
            "scenarios": list(config.scenarios),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_start": [round(x, 2) for x in load_start],
            "load_average_end": [round(x, 2) for x in load_end],
            "python": platform.python_version(),
            "platform": platform.platform(),
            "wrk": _wrk_version(),
            "note": "shared machine: other work ran meanwhile; figures are noisy",
        },
        "code": {"commit": _git("rev-parse", "HEAD"), "dirty": bool(_git("status", "--porcelain"))},
        "service": {
            "command": "gunicorn -c gunicorn.conf.py app.main:app --bind 127.0.0.1:<port> "
            f"--workers {config.workers}",
            "environment": "ENVIRONMENT=production, generated SECRET_KEY, LOG_LEVEL=WARNING "
            "(the per-request access log at INFO would dominate), every other setting at its "
            "default (DB_MAX_CONNECTIONS shared by the workers, production argon2 cost)",
        },
        "floor": {
            "command": "gunicorn bench.floor.app:app --worker-class uvicorn_worker.UvicornWorker "
            f"--reuse-port --workers {config.workers}",
            "what": "bare Starlette + asyncpg pool (the sizes of the service's workers), the "
            "service's SQL per scenario in the same transactions, python-jose with the same "
            "key and claims, argon2 on 4 threads; no validation, ORM or middleware. On its "
            "second address (the bare floor) the lists send one statement each (sql.BARE)",
        },
        "floor_sql_same_as_service": floor_sql,
        "data": {
            "users": seeded.users,
            "products": seeded.products,
            "search": seed.SEARCH_TERM,
            "search_matches": seeded.search_matches,
            "passwords": "one argon2id hash at the production cost, computed once and stored "
            "for every user",
            "between runs": "products created by a run deleted, refresh tokens and login "
            "failures truncated, VACUUM ANALYZE products",
        },
        "scenarios": {s.name: s.title for s in SCENARIOS},
        "targets": {
            "read req/s ratio": READ_RATIO,
            "write req/s ratio": WRITE_RATIO,
            "p99 factor": P99_FACTOR,
            "storm p99 factor": STORM_P99_FACTOR,
            "zero errors at": ZERO_ERRORS_AT,
            "note": "mixed and login_storm count as reads, login as a write",
        },
        "summary": [asdict(row) for row in rows],
        "failed_targets": failed,
        "runs": [asdict(run) for run in runs],
    }
    text = json.dumps(report, indent=2) + "\n"
    if config.smoke:
        (config.results / "bench-smoke-latest.json").write_text(text)
        log_path.unlink(missing_ok=True) if exit_status == 0 else None
        say(f"bench smoke: {'passed' if exit_status == 0 else 'FAILED'}; log {log_path}")
    else:
        (config.results / f"bench-{stamp}.json").write_text(text)
        (config.results / "bench-latest.json").write_text(text)
        subtitle = (
            f"{config.duration:g} s runs, median of {config.alternations}, {config.workers} "
            f"workers, {stamp}, load {load_start[0]:.1f}->{load_end[0]:.1f} on 2 shared cores"
        )
        draw_chart(rows, config.results / "bench-latest.png", subtitle)
        say(
            f"bench: wrote {config.results}/bench-{stamp}.json, bench-latest.json and "
            f"bench-latest.png; server log {log_path}"
        )
    return exit_status


def drive(
    config: Config,
    fixtures: Fixtures,
    servers: dict[App, Server],
    data: Path,
    profiles: Path | None,
) -> list[Run]:
    runs: list[Run] = []
    plan = _plan(config)
    for number, (scenario, connections) in enumerate(plan, 1):
        say(f"[{number}/{len(plan)}] {scenario.name} at {connections} connections")
        apps = apps_for(scenario.name)
        if config.warmup:
            for app in apps:
                asyncio.run(fixtures.refresh(scenario))
                run_wrk(
                    config, scenario, servers[app], connections, config.warmup, data, "w" + app[0]
                )
                if scenario.writes:
                    asyncio.run(clean_up(config.database_url))
        for alternation in range(1, config.alternations + 1):
            for app in apps:
                asyncio.run(fixtures.refresh(scenario))
                tag = f"{app[0]}{alternation}{secrets.token_hex(3)}"
                seconds = config.duration
                if config.smoke and scenario.name == "login":
                    seconds = max(seconds, 2.0)  # a login takes most of a second here
                profile_to = None
                if profiles is not None and app == "service" and alternation == 1:
                    profile_to = profiles / f"{scenario.name}-{connections}"
                result, logins, cpu = run_wrk(
                    config, scenario, servers[app], connections, seconds, data, tag, profile_to
                )
                figures = summarise_wrk(result)
                run = Run(
                    scenario=scenario.name,
                    app=app,
                    connections=connections,
                    alternation=alternation,
                    worker_cpu_s=cpu,
                    load_average=round(os.getloadavg()[0], 2),
                    storm_logins=summarise_wrk(logins) if logins is not None else None,
                    **figures,
                )
                runs.append(run)
                storm = ""
                if run.storm_logins is not None:
                    storm = (
                        f"; logins {run.storm_logins['rps']:.1f}/s, "
                        f"{run.storm_logins['errors']} errors"
                    )
                say(
                    f"    {app:<7} #{alternation}: {run.rps:>8.1f} req/s  p50 {run.p50_ms:>7.1f} ms"
                    f"  p99 {run.p99_ms:>7.1f} ms  errors {run.errors}  workers' CPU "
                    f"{'/'.join(f'{c:.1f}' for c in cpu)} s{storm}"
                    + (f"  statuses {run.statuses}" if run.errors else "")
                )
                if scenario.writes:
                    asyncio.run(clean_up(config.database_url))
                if profile_to is not None:
                    say(profile_summary(profile_to))
    return runs


def main() -> int:
    try:
        config = Config.from_environment()
        return benchmark(config)
    except (BenchError, seed.SeedError, production.ProductionError) as error:
        print(f"bench: could not run: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
