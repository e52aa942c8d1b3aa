"""Soak test: a mixed load against the production command, then checks.

`make soak`, `python -m bench.soak` or `python bench/soak.py`, from the repo root:

1. drops and recreates a PostgreSQL database, migrates it (creating a first
   admin) and seeds accounts and products through the API;
2. starts the production command (Gunicorn with Uvicorn workers, production
   settings and password hashing) on a free port, logging JSON to
   `bench/results/soak-<time>.log`;
3. runs Locust, headless, on bench/soak_locustfile.py: a fixed number of
   users, each with its own account and tokens, through a mix of reads,
   creates, updates, logins, refreshes and bad requests. Locust times every
   request (its CSV files, `bench/results/soak-<time>-locust_*.csv`, hold the
   latencies per kind of request); the locustfile counts the statuses,
   transport errors and the changes made to the shared products;
4. samples each worker's RSS after the warm-up and at the end;
5. checks: no 5xx, no transport error, every status one the request could
   get, no lost update (each shared product's version is 1 + the changes the
   soak made to it), worker memory growth under 10% after the warm-up, and a
   clean exit on SIGTERM. Prints a table, writes it as JSON to
   `bench/results/soak-<time>.json` and `soak-latest.json`, and exits 1 if a
   check failed (2 if the soak could not run at all).

Settings, from the environment:
  SOAK_SECONDS         how long the load runs, in whole seconds (default 600)
  SOAK_CONCURRENCY     virtual users (default 16)
  SOAK_WORKERS         Gunicorn workers (default 2)
  SOAK_WARMUP_SECONDS  excluded from the memory check (default 20% of the run, at most 30)
  SOAK_DATABASE_URL    the database to recreate
                       (default postgresql://postgres@127.0.0.1:5432/storefront_soak)
  SOAK_SEED            seed of the random mix (default 1)
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/soak.py` puts bench/ there, not the repo
    sys.path.insert(0, str(ROOT))

from bench import production  # noqa: E402

RESULTS = ROOT / "bench" / "results"
LOCUSTFILE = ROOT / "bench" / "soak_locustfile.py"
API = "/api/v1"

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/storefront_soak"
MAX_MEMORY_GROWTH_PCT = 10.0
POOL_SIZE = 10  # shared products every virtual user updates: contention on purpose
SEED_PRODUCTS_PER_USER = 20
THROWAWAY_ACCOUNTS = 4  # targets of wrong passwords; throttled (429) after a few
REQUEST_TIMEOUT = 30.0
# When the time is up, Locust lets each user finish the iteration it is in (up
# to three requests) for at most this long, so no write is cut off unanswered.
STOP_TIMEOUT = 4 * REQUEST_TIMEOUT
MEMORY_TRACE_EVERY = 10.0

# What the seeded products are called; the users' names and searches use them too.
WORDS = ("espresso", "lamp", "kettle", "notebook", "chair", "candle", "teapot", "scarf")
COLOURS = ("red", "white", "oak", "steel", "blue", "green")


class SoakError(Exception):
    """The soak could not run (as opposed to: it ran and a check failed)."""


# --- Settings -----------------------------------------------------------------


@dataclass(frozen=True)
class SoakConfig:
    seconds: float
    concurrency: int
    workers: int
    warmup_seconds: float
    database_url: str
    seed: int

    @classmethod
    def from_environment(cls) -> SoakConfig:
        seconds = _number("SOAK_SECONDS", 600.0)
        warmup = os.environ.get("SOAK_WARMUP_SECONDS")
        return cls(
            seconds=seconds,
            concurrency=int(_number("SOAK_CONCURRENCY", 16)),
            workers=int(_number("SOAK_WORKERS", 2)),
            warmup_seconds=_number("SOAK_WARMUP_SECONDS", 0) if warmup else min(seconds / 5, 30),
            database_url=os.environ.get("SOAK_DATABASE_URL") or DEFAULT_DATABASE_URL,
            seed=int(_number("SOAK_SEED", 1)),
        )


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SoakError(f"{name} must be a number, not {raw!r}") from None
    if value <= 0 and name != "SOAK_WARMUP_SECONDS":
        raise SoakError(f"{name} must be above 0")
    return value


# --- Database -----------------------------------------------------------------


async def recreate_database(database_url: str) -> None:
    """Drops and creates the soak's database, through the server's `postgres` database."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    url = make_url(database_url)
    name = url.database or ""
    if not url.drivername.startswith("postgresql") or not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise SoakError("SOAK_DATABASE_URL must be postgresql://.../<name of letters, digits, _>")
    server = url.set(drivername="postgresql+asyncpg", database="postgres")
    engine = create_async_engine(server, isolation_level="AUTOCOMMIT", connect_args={"timeout": 5})
    try:
        async with engine.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as error:  # connection refused, timeout, authentication, ...
        where = f"{url.host or 'localhost'}:{url.port or 5432}"
        reason = " ".join(str(error).split()) or type(error).__name__
        raise SoakError(f"PostgreSQL at {where} is unreachable or refused: {reason}") from None
    finally:
        await engine.dispose()


# --- The server -----------------------------------------------------------------


class Server(production.Server):
    """The production command, with what the soak reads of its workers."""

    def wait_until_ready(self, timeout: float = 90.0, workers: int = 1) -> None:
        """Until /health/ready answers 200 and every worker has logged that it serves."""
        super().wait_until_ready(timeout)
        deadline = time.monotonic() + timeout
        while len(self.serving_pids()) < workers:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SoakError(f"{workers} workers did not all start serving; see {self.log_path}")
            time.sleep(0.2)

    def serving_pids(self) -> set[int]:
        return {
            int(record["pid"])
            for record in log_records(self.log_path)
            if record.get("message") == "serving"
        }

    def worker_pids(self) -> list[int]:
        """The master's children: Gunicorn's workers."""
        return sorted(pid for pid, parent in _parents() if parent == self.process.pid)

    def running(self) -> bool:
        return self.process.poll() is None


def _parents() -> Iterable[tuple[int, int]]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        yield int(entry.name), int(stat.rpartition(")")[2].split()[1])


def rss_kib(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) if found else None


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time the process has used."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # After "pid (comm)": state ppid ... with utime and stime the 12th and 13th.
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Usage:
    """The workers' memory and CPU, Locust's CPU and the machine's load at one moment."""

    at_s: float
    rss_kib: dict[int, int | None]
    cpu_s: dict[int, float | None]
    load_generator_cpu_s: float | None  # Locust's process; None once it has exited
    load_average: float

    @classmethod
    def of(cls, server: Server, load_generator: int, at_s: float) -> Usage:
        pids = server.worker_pids()
        return cls(
            at_s=round(at_s, 1),
            rss_kib={pid: rss_kib(pid) for pid in pids},
            cpu_s={pid: cpu_seconds(pid) for pid in pids},
            load_generator_cpu_s=cpu_seconds(load_generator),
            load_average=round(os.getloadavg()[0], 2),
        )


def log_records(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


# --- Seeding ------------------------------------------------------------------


@dataclass
class Account:
    username: str
    password: str
    id: int = 0
    tokens: dict[str, Any] = field(default_factory=dict)  # the last token pair
    tokens_at: float = 0.0  # time.time() when it came

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens['access_token']}"}


@dataclass
class PoolProduct:
    """A product every virtual user changes; its final version is checked."""

    id: int
    sku: str
    base_version: int
    changes: int = 0  # PUT/PATCH answered 200
    uncertain: int = 0  # PUT/PATCH with no answer (transport error): applied or not
    final_version: int | None = None

    @property
    def consistent(self) -> bool:
        if self.final_version is None:
            return False
        return 0 <= self.final_version - self.base_version - self.changes <= self.uncertain


def _expect(response: httpx.Response, status: int, what: str) -> dict[str, Any]:
    if response.status_code != status:
        raise SoakError(f"seeding: {what} got {response.status_code}: {response.text[:200]}")
    body: dict[str, Any] = response.json() if response.content else {}
    return body


async def _login(client: httpx.AsyncClient, account: Account) -> None:
    form = {"username": account.username, "password": account.password}
    account.tokens = _expect(await client.post(f"{API}/auth/token", data=form), 200, "login")
    account.tokens_at = time.time()


async def _register(client: httpx.AsyncClient, account: Account) -> None:
    body = {
        "username": account.username,
        "email": f"{account.username}@example.com",
        "password": account.password,
    }
    account.id = _expect(await client.post(f"{API}/users", json=body), 201, "register")["id"]


async def seed(
    base_url: str, admin: Account, users: list[Account], throwaways: list[Account]
) -> list[PoolProduct]:
    """Accounts and products through the API; returns the shared pool.

    The virtual users are made admins so that all of them may change the
    shared products (changing them is what the lost-update check is about).
    """
    async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT) as client:
        await _login(client, admin)
        await asyncio.gather(*(_register(client, account) for account in users + throwaways))
        for account in users:
            response = await client.patch(
                f"{API}/users/{account.id}", json={"role": "admin"}, headers=admin.headers
            )
            _expect(response, 200, "making a virtual user an admin")
        await asyncio.gather(*(_login(client, account) for account in users))

        pool = []
        for number in range(POOL_SIZE):
            sku = f"SOAK-POOL-{number}"
            body = {"name": f"pool product {number}", "price": 10, "sku": sku}
            response = await client.post(f"{API}/products", json=body, headers=admin.headers)
            product = _expect(response, 201, "creating a shared product")
            pool.append(PoolProduct(product["id"], sku, product["version"]))

        async def products_of(number: int, account: Account) -> None:
            for index in range(SEED_PRODUCTS_PER_USER):
                word, colour = WORDS[index % len(WORDS)], COLOURS[number % len(COLOURS)]
                body = {"name": f"{colour} {word} {index}", "price": index * 7 + number}
                response = await client.post(f"{API}/products", json=body, headers=account.headers)
                _expect(response, 201, "creating a product")

        await asyncio.gather(*(products_of(n, a) for n, a in enumerate(users)))
    return pool


# --- The run ------------------------------------------------------------------


def drive(
    config: SoakConfig,
    server: Server,
    users: list[Account],
    pool: list[PoolProduct],
    throwaways: list[str],
    csv_prefix: Path,
    log_path: Path,
) -> tuple[dict[str, Any], list[dict[str, str]], list[Usage]]:
    """Runs Locust, headless, for the soak's time; samples the workers' usage meanwhile.

    Returns what the locustfile counted, the rows of Locust's `_stats.csv` and
    the samples: at the start, after the warm-up, every few seconds, and at
    the end. Their times count from Locust's start, a second or so before
    its users send their first requests.
    """
    with tempfile.TemporaryDirectory(prefix="soak-") as scratch:
        handoff, output = Path(scratch) / "soak.json", Path(scratch) / "counts.json"
        handoff.write_text(
            json.dumps(
                {
                    "accounts": [
                        {"username": a.username, "password": a.password, "id": a.id}
                        | {"tokens": a.tokens, "tokens_at": a.tokens_at}
                        for a in users
                    ],
                    "pool": [{"id": p.id, "sku": p.sku} for p in pool],
                    "throwaways": throwaways,
                    "seed": config.seed,
                    "words": WORDS,
                    "colours": COLOURS,
                    "output": str(output),
                }
            )
        )
        users_count = str(len(users))
        command = [
            *(sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless"),
            *("--host", server.base_url, "--users", users_count, "--spawn-rate", users_count),
            *(
                "--run-time",
                f"{math.ceil(config.seconds)}s",
                "--stop-timeout",
                f"{STOP_TIMEOUT:.0f}",
            ),
            *("--csv", str(csv_prefix), "--only-summary", "--exit-code-on-error", "0"),
        ]
        environment = {**os.environ, "SOAK_LOCUST_CONFIG": str(handoff)}
        with log_path.open("w") as log:
            started = time.monotonic()
            locust = subprocess.Popen(  # noqa: S603
                command, cwd=ROOT, env=environment, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
            try:
                samples = _watch(config, server, locust, started)
            finally:
                if locust.poll() is None:
                    locust.kill()
                    locust.wait()
        where = log_path.relative_to(ROOT)
        if not output.exists():
            raise SoakError(
                f"Locust exited with {locust.returncode} before its counts; see {where}"
            )
        counts: dict[str, Any] = json.loads(output.read_text())
    if counts["errors"]:
        raise SoakError(f"the locustfile failed; see {where}:\n{counts['errors'][0]}")
    if locust.returncode != 0:
        raise SoakError(f"Locust exited with {locust.returncode}; see {where}")
    with Path(f"{csv_prefix}_stats.csv").open(newline="") as stats:
        rows = list(csv.DictReader(stats))
    return counts, rows, samples


def _watch(
    config: SoakConfig, server: Server, locust: subprocess.Popen[bytes], started: float
) -> list[Usage]:
    """Samples at the start, after the warm-up and every few seconds until Locust exits."""

    def sample() -> Usage:
        return Usage.of(server, locust.pid, time.monotonic() - started)

    samples = [sample()]
    next_sample = started + config.warmup_seconds
    while locust.poll() is None:
        if not server.running():
            raise SoakError(f"the server exited during the run; see {server.log_path}")
        if time.monotonic() >= next_sample:
            samples.append(sample())
            next_sample += MEMORY_TRACE_EVERY
        time.sleep(0.5)
    samples.append(sample())
    return samples


async def read_versions(base_url: str, pool: list[PoolProduct]) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT) as client:
        for product in pool:
            response = await client.get(f"{API}/products/{product.id}")
            if response.status_code == 200:
                product.final_version = response.json()["version"]


# --- Report -------------------------------------------------------------------


@dataclass
class Latency:
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> Latency:
        """Nearest-rank percentiles of a list of durations (the server's, from its log)."""
        ordered = sorted(seconds)

        def rank(p: float) -> float:
            if not ordered:
                return 0.0
            return round(ordered[max(0, math.ceil(p * len(ordered)) - 1)] * 1000, 1)

        return cls(len(ordered), rank(0.50), rank(0.99), rank(1.0))

    @classmethod
    def of_locust(cls, row: dict[str, str]) -> Latency:
        """One row of Locust's `_stats.csv`: its percentiles, in whole milliseconds."""
        count = int(row["Request Count"])

        def percentile(column: str) -> float:
            return float(row[column]) if count else 0.0

        return cls(
            count, percentile("50%"), percentile("99%"), round(float(row["Max Response Time"]), 1)
        )


@dataclass
class Worker:
    pid: int
    requests: int  # soak requests it served, from its access log lines
    start_kib: int | None
    warmup_kib: int | None
    end_kib: int | None
    cpu_s: float | None  # used during the load

    @property
    def growth_pct(self) -> float | None:
        if not self.warmup_kib or self.end_kib is None:
            return None
        return round((self.end_kib - self.warmup_kib) / self.warmup_kib * 100, 2)


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class Report:
    started_at: str
    config: dict[str, Any]
    # Other work on the machine slows the figures down: its load average, and
    # the CPU time Locust used to generate the load.
    machine: dict[str, Any]
    duration_s: float
    requests: int
    requests_per_s: float
    statuses: dict[str, int]
    transport_errors: dict[str, int]
    unexpected: dict[str, dict[str, int]]
    latency: dict[str, Latency]
    workers: list[Worker]
    usage_trace: list[Usage]
    pool: list[PoolProduct]
    server_log_errors: int
    server_log_error_examples: list[str]
    examples: list[str]
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for worker, entry in zip(self.workers, data["workers"], strict=True):
            entry["growth_pct"] = worker.growth_pct
        data["passed"] = self.passed
        return data


def build_report(
    config: SoakConfig,
    started_at: datetime,
    counts: dict[str, Any],
    rows: list[dict[str, str]],
    samples: list[Usage],
    pool: list[PoolProduct],
    log_path: Path,
) -> Report:
    """The report: latencies from Locust's CSV, the rest from the locustfile's counts."""
    statuses: Counter[int] = Counter()
    transport: Counter[str] = Counter()
    for by_status in counts["statuses"].values():
        statuses.update({int(status): n for status, n in by_status.items()})
    for by_error in counts["transport_errors"].values():
        transport.update(by_error)
    unexpected: dict[str, dict[str, int]] = counts["unexpected"]
    by_name = {row["Name"]: row for row in rows}
    total = by_name.get("Aggregated")
    requests = int(total["Request Count"]) if total else 0
    failures = int(total["Failure Count"]) if total else 0
    counted = sum(statuses.values()) + sum(transport.values())
    failed = sum(transport.values()) + sum(sum(s.values()) for s in unexpected.values())
    if total is None or (requests, failures) != (counted, failed):
        raise SoakError(
            f"Locust's CSV ({requests} requests, {failures} failures) and the locustfile's "
            f"counts ({counted} requests, {failed} failures) disagree"
        )
    duration = counts["stopped_at"] - counts["started_at"]
    records = log_records(log_path)
    served = [
        record
        for record in records
        if record.get("logger") == "app.access"
        and str(record.get("request_id")).startswith("soak-")
    ]
    served_by = Counter(int(record["pid"]) for record in served)
    # samples[1] is the first after the warm-up (the end, if the run was shorter).
    start, warmup, end = samples[0], samples[1], samples[-1]

    def cpu_used(pid: int) -> float | None:
        before, after = start.cpu_s.get(pid), end.cpu_s.get(pid)
        return round(after - before, 1) if before is not None and after is not None else None

    workers = [
        Worker(
            pid,
            served_by[pid],
            start.rss_kib.get(pid),
            warmup.rss_kib.get(pid),
            end.rss_kib.get(pid),
            cpu_used(pid),
        )
        for pid in sorted(warmup.rss_kib.keys() | end.rss_kib.keys())
    ]
    errors = [
        f"{record.get('logger')}: {record.get('message')} [{record.get('request_id')}]"
        for record in records
        if record.get("level") in ("ERROR", "CRITICAL")
    ]
    database = re.sub(r"//[^@/]*@", "//", config.database_url)  # no credentials in a report
    return Report(
        started_at=started_at.isoformat(timespec="seconds"),
        config={**asdict(config), "database_url": database},
        machine={
            "cpus": os.cpu_count(),
            "load_average_start": start.load_average,
            "load_average_end": end.load_average,
            "load_generator": f"Locust {version('locust')}",
            "load_generator_cpu_s": round(counts["cpu_s"], 1),
        },
        duration_s=round(duration, 1),
        requests=requests,
        requests_per_s=round(requests / duration, 1) if duration > 0 else 0.0,
        statuses={str(status): count for status, count in sorted(statuses.items())},
        transport_errors=dict(transport),
        unexpected=unexpected,
        latency={
            "overall": Latency.of_locust(total),
            # As the workers measured it (their access log), without the client's side.
            "overall, server": Latency.of([float(r["duration_ms"]) / 1000 for r in served]),
            **{
                kind: Latency.of_locust(by_name[kind])
                for kind in counts["kinds"]
                if kind in by_name
            },
        },
        workers=workers,
        usage_trace=samples,
        pool=pool,
        server_log_errors=len(errors),
        server_log_error_examples=errors[:20],
        examples=counts["examples"],
    )


def add_checks(report: Report, exit_status: int | None) -> None:
    server_errors = sum(c for s, c in report.statuses.items() if s.startswith("5"))
    transport = sum(report.transport_errors.values())
    unexpected = sum(sum(by_status.values()) for by_status in report.unexpected.values())
    lost = [p for p in report.pool if not p.consistent]
    changes = sum(p.changes for p in report.pool)
    growths = [w.growth_pct for w in report.workers]
    measured = [g for g in growths if g is not None]
    worst = max(measured, default=0.0)
    checks = [
        Check("no 5xx response", server_errors == 0, f"{server_errors} responses with 5xx"),
        Check("no transport error", transport == 0, f"{transport} requests got no answer"),
        Check(
            "every status expected for its request",
            unexpected == 0,
            f"{unexpected} unexpected"
            + (f": {json.dumps(report.unexpected)}" if report.unexpected else ""),
        ),
        Check(
            "no lost update",
            not lost,
            f"{len(report.pool)} shared products, {changes} changes, every version = 1 + changes"
            if not lost
            else "; ".join(
                f"product {p.id}: version {p.final_version}, expected "
                f"{p.base_version + p.changes}" + (f"+{p.uncertain}?" if p.uncertain else "")
                for p in lost
            ),
        ),
        Check(
            f"worker memory growth < {MAX_MEMORY_GROWTH_PCT:g}% after warm-up",
            bool(growths) and len(measured) == len(growths) and worst < MAX_MEMORY_GROWTH_PCT,
            f"worst {worst:+.1f}% over {len(growths)} workers"
            if len(measured) == len(growths)
            else "a worker was missing at the warm-up or at the end (restarted?)",
        ),
        Check(
            "server exits 0 on SIGTERM",
            exit_status == 0,
            f"exit status {exit_status}" if exit_status is not None else "killed after 60 s",
        ),
    ]
    report.checks.extend(checks)


def render(report: Report) -> str:
    config = report.config
    lines = [
        f"soak  {report.duration_s:.0f} s, {config['workers']} workers, "
        f"{config['concurrency']} virtual users, {config['database_url']}",
        f"machine  {report.machine['cpus']} CPUs, load average "
        f"{report.machine['load_average_start']:.1f} at start, "
        f"{report.machine['load_average_end']:.1f} at end; the load generator "
        f"({report.machine['load_generator']}) used "
        f"{report.machine['load_generator_cpu_s']:.0f} s of CPU",
        f"requests  {report.requests}  ({report.requests_per_s:.1f} req/s), "
        f"transport errors {sum(report.transport_errors.values())}",
        "statuses  " + "  ".join(f"{s}: {c}" for s, c in report.statuses.items()),
        "",
        f"{'latency ms':<20}{'count':>8}{'p50':>9}{'p99':>9}{'max':>9}",
    ]
    for name, latency in report.latency.items():
        lines.append(
            f"{name:<20}{latency.count:>8}{latency.p50_ms:>9.1f}"
            f"{latency.p99_ms:>9.1f}{latency.max_ms:>9.1f}"
        )
    columns = ("requests", "CPU s", "RSS MiB: start", "warm-up", "end", "growth")
    widths = [max(9, len(column) + 2) for column in columns]
    header = "".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True))
    lines += ["", f"{'worker':<12}{header}"]
    for worker in report.workers:
        growth = worker.growth_pct
        cells = (
            str(worker.requests),
            f"{worker.cpu_s:.0f}" if worker.cpu_s is not None else "-",
            _mib(worker.start_kib),
            _mib(worker.warmup_kib),
            _mib(worker.end_kib),
            f"{growth:+.1f}%" if growth is not None else "-",
        )
        row = "".join(f"{cell:>{w}}" for w, cell in zip(widths, cells, strict=True))
        lines.append(f"{'pid ' + str(worker.pid):<12}{row}")
    if report.server_log_errors:
        lines += ["", f"server log: {report.server_log_errors} error lines, e.g."]
        lines += [f"  {line}" for line in report.server_log_error_examples[:5]]
    if report.examples:
        lines += ["", "requests to look up in the server log (by request id):"]
        lines += [f"  {line}" for line in report.examples[:10]]
    lines.append("")
    lines += [f"{'PASS' if c.passed else 'FAIL'}  {c.name}: {c.detail}" for c in report.checks]
    return "\n".join(lines)


def _mib(kib: int | None) -> str:
    return f"{kib / 1024:.1f}" if kib is not None else "-"


def write_results(report: Report, stamp: str) -> Path:
    text = json.dumps(report.as_json(), indent=2) + "\n"
    path = RESULTS / f"soak-{stamp}.json"
    path.write_text(text)
    (RESULTS / "soak-latest.json").write_text(text)
    return path


# --- Main ---------------------------------------------------------------------


def soak(config: SoakConfig) -> Report:
    started_at = datetime.now(UTC)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    log_path = RESULTS / f"soak-{stamp}.log"
    locust_log = RESULTS / f"soak-{stamp}-locust.log"
    csv_prefix = RESULTS / f"soak-{stamp}-locust"  # Locust adds _stats.csv, _failures.csv, ...

    def account(name: str) -> Account:
        return Account(f"soak-{name}", secrets.token_urlsafe(12))

    admin = account("admin")
    users = [account(f"user-{n}") for n in range(config.concurrency)]
    throwaways = [account(f"throwaway-{n}") for n in range(THROWAWAY_ACCOUNTS)]

    print(f"soak: recreating {re.sub(r'//[^@/]*@', '//', config.database_url)}", flush=True)
    asyncio.run(recreate_database(config.database_url))
    environment = production.environment(
        config.database_url,
        "INFO",
        FIRST_ADMIN_USERNAME=admin.username,
        FIRST_ADMIN_EMAIL=f"{admin.username}@example.com",
        FIRST_ADMIN_PASSWORD=admin.password,
    )
    with log_path.open("a") as log:
        production.migrate(environment, log)
        server = Server.start(environment, config.workers, log)
    exit_status: int | None = None
    try:
        print(f"soak: server at {server.base_url}, log in {log_path.relative_to(ROOT)}", flush=True)
        server.wait_until_ready(workers=config.workers)
        pool = asyncio.run(seed(server.base_url, admin, users, throwaways))
        print(
            f"soak: Locust, {config.concurrency} users for {math.ceil(config.seconds)} s "
            f"(warm-up {config.warmup_seconds:g} s), log in {locust_log.relative_to(ROOT)}",
            flush=True,
        )
        names = [t.username for t in throwaways]
        counts, rows, samples = drive(config, server, users, pool, names, csv_prefix, locust_log)
        for product in pool:
            product.changes = counts["pool"][str(product.id)]["changes"]
            product.uncertain = counts["pool"][str(product.id)]["uncertain"]
        asyncio.run(read_versions(server.base_url, pool))
    finally:
        exit_status = server.stop()
    report = build_report(config, started_at, counts, rows, samples, pool, log_path)
    add_checks(report, exit_status)
    path = write_results(report, stamp)
    print()
    print(render(report))
    print(f"\nwritten to {path.relative_to(ROOT)} and soak-latest.json; Locust's CSV in")
    print(f"{csv_prefix.relative_to(ROOT)}_*.csv")
    return report


def main() -> int:
    try:
        report = soak(SoakConfig.from_environment())
    except (SoakError, production.ProductionError) as error:
        print(f"soak: {error}", file=sys.stderr)
        return 2
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
