"""Soak test: a mixed load against the production command, then checks.

`make soak`, `python -m bench.soak` or `python bench/soak.py`, from the repo root:

1. drops and recreates a PostgreSQL database, migrates it (creating a first
   admin) and seeds accounts and products through the API;
2. starts the production command (Gunicorn with Uvicorn workers, production
   settings and password hashing) on a free port, logging JSON to
   `bench/results/soak-<time>.log`;
3. runs a fixed number of virtual users, each with its own account and
   tokens, through a mix of reads, creates, updates, logins, refreshes and
   bad requests, timing every request;
4. samples each worker's RSS after the warm-up and at the end;
5. checks: no 5xx, no transport error, every status one the request could
   get, no lost update (each shared product's version is 1 + the changes the
   soak made to it), worker memory growth under 10% after the warm-up, and a
   clean exit on SIGTERM. Prints a table, writes it as JSON to
   `bench/results/soak-<time>.json` and `soak-latest.json`, and exits 1 if a
   check failed (2 if the soak could not run at all).

Settings, from the environment:
  SOAK_SECONDS         how long the load runs (default 600)
  SOAK_CONCURRENCY     virtual users (default 16)
  SOAK_WORKERS         Gunicorn workers (default 2)
  SOAK_WARMUP_SECONDS  excluded from the memory check (default 20% of the run, at most 30)
  SOAK_DATABASE_URL    the database to recreate
                       (default postgresql://postgres@127.0.0.1:5432/storefront_soak)
  SOAK_SEED            seed of the random mix (default 1)
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import secrets
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/soak.py` puts bench/ there, not the repo
    sys.path.insert(0, str(ROOT))

from bench import production  # noqa: E402

RESULTS = ROOT / "bench" / "results"
API = "/api/v1"

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/storefront_soak"
MAX_MEMORY_GROWTH_PCT = 10.0
POOL_SIZE = 10  # shared products every virtual user updates: contention on purpose
SEED_PRODUCTS_PER_USER = 20
THROWAWAY_ACCOUNTS = 4  # targets of wrong passwords; throttled (429) after a few
REQUEST_TIMEOUT = 30.0
RENEW_MARGIN = 60.0  # refresh an access token this many seconds before it expires
# About one request in this many asks for `Connection: close`: clients come and
# go, and new connections spread the load over the workers (a connection kept
# for the whole run stays with the worker that accepted it, often all on one).
RECONNECT_EVERY = 50
MEMORY_TRACE_EVERY = 10.0
# What gunicorn.conf.py reads from the environment: left out, so that its own
# defaults and the command line decide.
_GUNICORN_VARIABLES = (
    *("BIND", "PORT", "WEB_CONCURRENCY", "GRACEFUL_TIMEOUT", "FORWARDED_ALLOW_IPS"),
    "KEEPALIVE_SECONDS",
    "PROMETHEUS_MULTIPROC_DIR",
)

WORDS = ("espresso", "lamp", "kettle", "notebook", "chair", "candle", "teapot", "scarf")
COLOURS = ("red", "white", "oak", "steel", "blue", "green")
SORTS = ("id", "-id", "name", "-name", "price", "-price", "created_at", "-created_at")
# The kinds of request, in the report's order.
KINDS = (
    *("list", "get", "get_if_none_match", "me", "create", "patch_pool", "if_match_write"),
    *("delete", "login", "refresh", "invalid_body", "unknown_id", "no_token", "wrong_password"),
)


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
    """The workers' memory and CPU, this process's CPU and the machine's load at one moment."""

    at_s: float
    rss_kib: dict[int, int | None]
    cpu_s: dict[int, float | None]
    load_generator_cpu_s: float
    load_average: float

    @classmethod
    def of(cls, server: Server, at_s: float) -> Usage:
        pids = server.worker_pids()
        return cls(
            at_s=round(at_s, 1),
            rss_kib={pid: rss_kib(pid) for pid in pids},
            cpu_s={pid: cpu_seconds(pid) for pid in pids},
            load_generator_cpu_s=round(time.process_time(), 2),
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


# --- Measurements -------------------------------------------------------------


@dataclass
class KindStats:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    unexpected: Counter[int] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)


@dataclass
class Stats:
    kinds: dict[str, KindStats] = field(default_factory=dict)
    # A few of the requests worth looking up in the server log by request id.
    examples: list[str] = field(default_factory=list)

    def _kind(self, kind: str) -> KindStats:
        if kind not in KINDS:
            raise ValueError(f"unknown kind of request {kind!r}")
        return self.kinds.setdefault(kind, KindStats())

    def record(
        self, kind: str, request: str, status: int, seconds: float, expected: Iterable[int]
    ) -> None:
        stats = self._kind(kind)
        stats.latencies.append(seconds)
        stats.statuses[status] += 1
        if status not in expected:
            stats.unexpected[status] += 1
            self._example(f"{status} {request}")

    def transport_error(self, kind: str, request: str, error: Exception) -> None:
        name = type(error).__name__
        self._kind(kind).transport_errors[name] += 1
        self._example(f"{name} {request}: {error}")

    def _example(self, line: str) -> None:
        if len(self.examples) < 20:
            self.examples.append(line)


@dataclass
class Account:
    username: str
    password: str
    id: int = 0
    access_token: str = ""
    refresh_token: str = ""
    renew_at: float = 0.0  # time.monotonic() after which the access token is refreshed

    def take(self, pair: dict[str, Any]) -> None:
        self.access_token = pair["access_token"]
        self.refresh_token = pair["refresh_token"]
        self.renew_at = time.monotonic() + max(1.0, float(pair["expires_in"]) - RENEW_MARGIN)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


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


# --- Virtual users ------------------------------------------------------------


class VirtualUser:
    """One client with its own account, tokens and connection, doing one request at a time."""

    def __init__(
        self,
        number: int,
        client: httpx.AsyncClient,
        account: Account,
        pool: list[PoolProduct],
        throwaways: list[str],
        stats: Stats,
        rng: random.Random,
    ) -> None:
        self.number = number
        self.client = client
        self.account = account
        self.pool = pool
        self.throwaways = throwaways
        self.stats = stats
        self.rng = rng
        self.own: list[int] = []  # products this user created and has not deleted
        self.etags: dict[int, str] = {}
        self.sent = 0

    # The mix: (what, weight). Weights are percentages of iterations; the
    # conditional write also reads the product first.
    def mix(self) -> list[tuple[Callable[[], Awaitable[None]], int]]:
        return [
            (self.list_products, 24),
            (self.get_product, 14),
            (self.get_if_none_match, 10),
            (self.read_me, 12),
            (self.create_product, 15),
            (self.patch_pool, 9),
            (self.write_if_match, 4),
            (self.delete_own, 2),
            (self.login, 3),
            (self.refresh, 3),
            (self.invalid_body, 1),
            (self.unknown_id, 1),
            (self.no_token, 1),
            (self.wrong_password, 1),
        ]

    async def run(self, deadline: float) -> None:
        actions, weights = zip(*self.mix(), strict=True)
        while time.monotonic() < deadline:
            await self.rng.choices(actions, weights)[0]()

    async def call(
        self,
        kind: str,
        expected: tuple[int, ...],
        method: str,
        path: str,
        **options: Any,
    ) -> httpx.Response | None:
        """One timed request; None when no answer came (a transport error, recorded)."""
        self.sent += 1
        request_id = f"soak-{self.number}-{self.sent}"
        headers = {"X-Request-ID": request_id, **options.pop("headers", {})}
        if self.rng.randrange(RECONNECT_EVERY) == 0:
            headers["Connection"] = "close"
        described = f"{method} {path} [{request_id}]"
        started = time.perf_counter()
        try:
            response = await self.client.request(method, path, headers=headers, **options)
        except httpx.TransportError as error:
            self.stats.transport_error(kind, described, error)
            await asyncio.sleep(0.1)  # no busy loop against a dead server
            return None
        self.stats.record(
            kind, described, response.status_code, time.perf_counter() - started, expected
        )
        return response

    async def auth(self) -> dict[str, str]:
        """The access token's header, refreshing the token when it is about to expire."""
        if time.monotonic() >= self.account.renew_at:
            await self.refresh()
        return self.account.headers

    # Reads

    async def list_products(self) -> None:
        params: dict[str, str | int] = {
            "sort": self.rng.choice(SORTS),
            "limit": self.rng.choice((5, 10, 20, 50, 100)),
            "offset": self.rng.choice((0, 0, 0, 10, 50, 500)),
        }
        if self.rng.random() < 0.3:
            params["q"] = self.rng.choice((*WORDS, *COLOURS, "pool", "zz%_"))
        if self.rng.random() < 0.3:
            low = self.rng.randrange(0, 500)
            params.update(min_price=low, max_price=low + self.rng.randrange(0, 500))
        if self.rng.random() < 0.2:
            params["owner_id"] = self.account.id
        await self.call("list", (200,), "GET", f"{API}/products", params=params)

    async def get_product(self) -> None:
        await self._get(self._some_product())

    async def _get(self, product_id: int) -> httpx.Response | None:
        response = await self.call("get", (200,), "GET", f"{API}/products/{product_id}")
        if response is not None and response.status_code == 200:
            self.etags[product_id] = response.headers["ETag"]
        return response

    async def get_if_none_match(self) -> None:
        product_id = self._some_product()
        etag = self.etags.get(product_id)
        if etag is None:
            await self._get(product_id)
            return
        response = await self.call(
            "get_if_none_match",
            (200, 304),
            "GET",
            f"{API}/products/{product_id}",
            headers={"If-None-Match": etag},
        )
        if response is not None and response.status_code == 200:
            self.etags[product_id] = response.headers["ETag"]

    async def read_me(self) -> None:
        await self.call("me", (200,), "GET", f"{API}/users/me", headers=await self.auth())

    def _some_product(self) -> int:
        if self.own and self.rng.random() < 0.5:
            return self.rng.choice(self.own)
        return self.rng.choice(self.pool).id

    # Writes

    def _product_body(self) -> dict[str, Any]:
        word, colour = self.rng.choice(WORDS), self.rng.choice(COLOURS)
        body: dict[str, Any] = {
            "name": f"{colour} {word}",
            "price": f"{self.rng.randrange(1, 100_000) / 100:.2f}",
        }
        if self.rng.random() < 0.5:
            body["description"] = f"A {word} in {colour}, made by soak user {self.number}."
        if self.rng.random() < 0.3:
            body["tax"] = self.rng.randrange(0, 2_000) / 100
        if self.rng.random() < 0.5:
            body["sku"] = f"SOAK-{self.number}-{self.sent}-{self.rng.randrange(10**6)}"
        return body

    async def create_product(self) -> None:
        response = await self.call(
            "create",
            (201,),
            "POST",
            f"{API}/products",
            json=self._product_body(),
            headers=await self.auth(),
        )
        if response is not None and response.status_code == 201:
            product = response.json()
            self.own.append(product["id"])
            self.etags[product["id"]] = response.headers["ETag"]

    async def patch_pool(self) -> None:
        """PATCH without If-Match: every one must apply, none may be lost."""
        product = self.rng.choice(self.pool)
        change: dict[str, Any] = {"description": self._note()}
        if self.rng.random() < 0.5:
            change["price"] = self.rng.randrange(1, 100_000) / 100
        if self.rng.random() < 0.2:
            change["tax"] = None
        await self._change(product, "patch_pool", (200,), "PATCH", change, {})

    def _note(self) -> str:
        """A description no other change writes: every change really changes the product."""
        return f"changed by soak user {self.number}, request {self.sent + 1}"

    async def write_if_match(self) -> None:
        """Reads a shared product, then PUTs or PATCHes it with If-Match: 200, or 412 if beaten."""
        product = self.rng.choice(self.pool)
        read = await self._get(product.id)
        if read is None or read.status_code != 200:
            return
        method = self.rng.choice(("PUT", "PATCH"))
        if method == "PUT":
            body = {**self._product_body(), "sku": product.sku, "description": self._note()}
        else:
            body = {"price": self.rng.randrange(1, 100_000) / 100, "description": self._note()}
        headers = {"If-Match": read.headers["ETag"]}
        await self._change(product, "if_match_write", (200, 412), method, body, headers)

    async def _change(
        self,
        product: PoolProduct,
        kind: str,
        expected: tuple[int, ...],
        method: str,
        body: dict[str, Any],
        headers: dict[str, str],
    ) -> None:
        response = await self.call(
            kind,
            expected,
            method,
            f"{API}/products/{product.id}",
            json=body,
            headers={**headers, **await self.auth()},
        )
        if response is None:
            product.uncertain += 1
        elif response.status_code == 200:
            product.changes += 1
            self.etags[product.id] = response.headers["ETag"]

    async def delete_own(self) -> None:
        if len(self.own) <= SEED_PRODUCTS_PER_USER // 2:
            await self.create_product()
            return
        product_id = self.own.pop(self.rng.randrange(len(self.own)))
        headers = await self.auth()
        if product_id in self.etags and self.rng.random() < 0.5:
            headers["If-Match"] = self.etags[product_id]
        # Nobody else changes a user's own products, so the ETag it saw is current.
        await self.call("delete", (204,), "DELETE", f"{API}/products/{product_id}", headers=headers)
        self.etags.pop(product_id, None)

    # Tokens

    async def login(self) -> None:
        form = {"username": self.account.username, "password": self.account.password}
        response = await self.call("login", (200,), "POST", f"{API}/auth/token", data=form)
        if response is not None and response.status_code == 200:
            self.account.take(response.json())

    async def refresh(self) -> None:
        """Rotates the pair; the next request uses the new access token."""
        body = {"refresh_token": self.account.refresh_token}
        response = await self.call("refresh", (200,), "POST", f"{API}/auth/refresh", json=body)
        if response is not None and response.status_code == 200:
            self.account.take(response.json())
        elif response is not None:  # unexpected, recorded; carry on with a fresh login
            await self.login()

    # Bad requests

    async def invalid_body(self) -> None:
        body = self.rng.choice(({"name": "", "price": "12.345"}, {"price": -1}, {"owner_id": 1}))
        await self.call(
            "invalid_body", (422,), "POST", f"{API}/products", json=body, headers=await self.auth()
        )

    async def unknown_id(self) -> None:
        await self.call("unknown_id", (404,), "GET", f"{API}/products/{10**12 + self.sent}")

    async def no_token(self) -> None:
        path, body = self.rng.choice(
            ((f"{API}/products", self._product_body()), (f"{API}/users/me", None))
        )
        method = "POST" if body is not None else "GET"
        await self.call("no_token", (401,), method, path, json=body)

    async def wrong_password(self) -> None:
        form = {"username": self.rng.choice(self.throwaways), "password": "not-the-password"}
        await self.call("wrong_password", (400, 429), "POST", f"{API}/auth/token", data=form)


# --- Seeding ------------------------------------------------------------------


def _expect(response: httpx.Response, status: int, what: str) -> dict[str, Any]:
    if response.status_code != status:
        raise SoakError(f"seeding: {what} got {response.status_code}: {response.text[:200]}")
    body: dict[str, Any] = response.json() if response.content else {}
    return body


async def _login(client: httpx.AsyncClient, account: Account) -> None:
    form = {"username": account.username, "password": account.password}
    account.take(_expect(await client.post(f"{API}/auth/token", data=form), 200, "login"))


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


async def drive(
    config: SoakConfig,
    server: Server,
    users: list[Account],
    pool: list[PoolProduct],
    throwaways: list[str],
) -> tuple[Stats, float, list[Usage]]:
    """Runs the virtual users until the time is up; samples the workers' usage meanwhile.

    Returns the measurements, the load's duration and the samples: at the
    start, after the warm-up, every few seconds, and at the end.
    """
    stats = Stats()
    started = time.monotonic()
    deadline = started + config.seconds
    samples = [Usage.of(server, 0)]

    def sample() -> None:
        samples.append(Usage.of(server, time.monotonic() - started))

    async def watch() -> None:
        """Samples after the warm-up and every few seconds."""
        await asyncio.sleep(config.warmup_seconds)
        next_sample = time.monotonic()
        while time.monotonic() < deadline and server.running():
            if time.monotonic() >= next_sample:
                sample()
                next_sample += MEMORY_TRACE_EVERY
            await asyncio.sleep(0.5)

    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    clients = [
        httpx.AsyncClient(base_url=server.base_url, timeout=REQUEST_TIMEOUT, limits=limits)
        for _ in users
    ]
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(watch())
            for number, (client, account) in enumerate(zip(clients, users, strict=True)):
                # A reproducible mix, not secrets.
                rng = random.Random(config.seed * 1000 + number)  # noqa: S311
                user = VirtualUser(number, client, account, pool, throwaways, stats, rng)
                group.create_task(user.run(deadline))
    finally:
        for client in clients:
            await client.aclose()
    if not server.running():
        raise SoakError(f"the server exited during the run; see {server.log_path}")
    duration = time.monotonic() - started
    sample()
    return stats, duration, samples


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
        ordered = sorted(seconds)

        def rank(p: float) -> float:
            if not ordered:
                return 0.0
            return round(ordered[max(0, math.ceil(p * len(ordered)) - 1)] * 1000, 1)

        return cls(len(ordered), rank(0.50), rank(0.99), rank(1.0))


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
    # the CPU time this process used to generate the load.
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
    stats: Stats,
    duration: float,
    samples: list[Usage],
    pool: list[PoolProduct],
    log_path: Path,
) -> Report:
    statuses: Counter[int] = Counter()
    transport: Counter[str] = Counter()
    everything: list[float] = []
    for kind in stats.kinds.values():
        statuses.update(kind.statuses)
        transport.update(kind.transport_errors)
        everything.extend(kind.latencies)
    requests = sum(statuses.values()) + sum(transport.values())
    ran = [name for name in KINDS if name in stats.kinds]
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
            "load_generator_cpu_s": round(end.load_generator_cpu_s - start.load_generator_cpu_s, 1),
        },
        duration_s=round(duration, 1),
        requests=requests,
        requests_per_s=round(requests / duration, 1) if duration else 0.0,
        statuses={str(status): count for status, count in sorted(statuses.items())},
        transport_errors=dict(transport),
        unexpected={
            name: {str(s): c for s, c in sorted(kind.unexpected.items())}
            for name, kind in stats.kinds.items()
            if kind.unexpected
        },
        latency={
            "overall": Latency.of(everything),
            # As the workers measured it (their access log), without the client's side.
            "overall, server": Latency.of([float(r["duration_ms"]) / 1000 for r in served]),
            **{name: Latency.of(stats.kinds[name].latencies) for name in ran},
        },
        workers=workers,
        usage_trace=samples,
        pool=pool,
        server_log_errors=len(errors),
        server_log_error_examples=errors[:20],
        examples=stats.examples,
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
        f"{report.machine['load_average_end']:.1f} at end; the load generator used "
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
            f"soak: {config.concurrency} virtual users for {config.seconds:g} s "
            f"(warm-up {config.warmup_seconds:g} s)",
            flush=True,
        )
        names = [t.username for t in throwaways]
        stats, duration, samples = asyncio.run(drive(config, server, users, pool, names))
        asyncio.run(read_versions(server.base_url, pool))
    finally:
        exit_status = server.stop()
    report = build_report(config, started_at, stats, duration, samples, pool, log_path)
    add_checks(report, exit_status)
    path = write_results(report, stamp)
    print()
    print(render(report))
    print(f"\nwritten to {path.relative_to(ROOT)} and soak-latest.json")
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
