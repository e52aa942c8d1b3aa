"""What each middleware and each hot route's dependencies cost a request: one process, no HTTP.

`python -m bench.stack` (run by `make bench`) builds the production app and
calls it as an ASGI application, taking the CPU time per request
(time.process_time: the client side of the database's I/O counts, the
server's does not; other work on the machine matters less than in wall
time, though noise remains). Writes bench/results/stack-latest.json.

1. **Middleware.** `GET /health/live` (a route that only answers) with
   every middleware, then with each one left out in turn (the difference is
   its cost: the median of with/without pairs), and a bare Starlette route
   beside it. No database.
2. **Dependencies.** The routes the benchmark drives (a product read, the
   list's first page, /users/me, a PATCH with If-Match, a create), on a
   real database: PostgreSQL at BENCH_DATABASE_URL (default
   postgresql://postgres@127.0.0.1:5432/storefront_bench_stack; dropped,
   recreated and migrated with `python -m app migrate`, as `make bench`
   does), or SQLite in a temporary directory when that server cannot be
   reached. The app's own services seed one user (its access token from the
   app's TokenCodec) and a page of their products. Each route is called
   through the whole app, and with each of its top-level dependencies
   replaced in turn through `app.dependency_overrides` by a value made
   before the request (the signed-in row, the Actor, the read service, the
   write services on a session opened, and its transaction begun, before
   the clock starts), then with all of them replaced. A replaced dependency
   takes its sub-dependencies with it, so its cost includes what it pulls
   in, and the client side of its I/O (the token check's read of the user;
   the session's BEGIN, COMMIT and close). The session that a write's
   dependencies share is priced as a row of its own. Requests go in pairs,
   whole and replaced, alternately first, so that both meet the same load;
   a cost is the mean of the pairs' differences (the tenth at each end left
   out), with its standard error. The events relay, which publishes a
   write's event after the response, is stopped meanwhile and priced on
   its own.

FastAPI analyses every dependency's signature again on every request while
`app.dependency_overrides` holds anything (about 50 µs for the session
alone, 180 µs for the token check), which would swamp what is measured;
the analyses are memoised for these runs (`_analysed_once`), and the
baseline of each pair runs with an unrelated override installed, so both
sides go through the same code. What that path still costs (`override
machinery` in the results: the baseline against the plain app, some µs per
dependency) is shared out by the look-ups counted: the share of those a
replaced dependency's sub-dependencies no longer need is taken off its
cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from fastapi import FastAPI
    from sqlalchemy.ext.asyncio import AsyncSession

REQUESTS = int(os.environ.get("BENCH_STACK_REQUESTS", "10000"))
ROUNDS = 3  # the median of these, each REQUESTS long
# The routes: pairs of requests, one whole and one with a dependency
# replaced (which goes first alternates), so that both meet the same load on
# a shared machine. A read costs a database round trip, a write several
# statements and a commit: fewer pairs of them.
READ_PAIRS = max(REQUESTS // 16, 10)
WRITE_PAIRS = max(REQUESTS // 40, 10)
TRIM = 0.1  # of the pairs' differences, left out at each end before the mean
DATABASE_URL = (
    os.environ.get("BENCH_DATABASE_URL")
    or "postgresql://postgres@127.0.0.1:5432/storefront_bench_stack"
)
PAGE = 20  # products seeded: the list's first page is full
NOT_MEASURED = {
    "the list's query (ProductQuery)": "a query-parameter model (Annotated[ProductQuery, "
    "Query()]), not a dependency: app.dependency_overrides cannot replace it; nor the path, "
    "header and body parameters of any route",
    "sub-dependencies alone (get_database, get_app_settings, get_token_codec, "
    "OAuth2PasswordBearer)": "not priced alone (each an attribute read or a header "
    "parse); counted in the dependency that pulls them in",
    "get_signed_in_row's side effect": "the app's dependency also sets the request's user "
    "id for the logs (a context variable); the replacement does not, so that is counted in "
    "its cost",
}
ASGI = Callable[..., Awaitable[None]]
Headers = list[tuple[bytes, bytes]]


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }


def _route_scope(path: str, method: str = "GET", headers: Headers | None = None) -> dict[str, Any]:
    scope = _scope(path)
    scope["method"] = method
    scope["headers"] += headers or []
    return scope


async def _microseconds(app: ASGI, path: str, rounds: int = ROUNDS) -> float:
    """CPU µs per request: the median of `rounds` runs of REQUESTS requests each."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise RuntimeError(f"{path} answered {message['status']}")

    # As a worker runs after gunicorn.conf.py's post_fork: the app's objects frozen.
    gc.collect()
    gc.freeze()
    figures = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(REQUESTS):
            await app(_scope(path), receive, send)
        figures.append((time.process_time() - started) / REQUESTS * 1e6)
    return sorted(figures)[rounds // 2]


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


# --- Middleware ---------------------------------------------------------------------


async def measure_middleware(app: FastAPI) -> dict[str, Any]:
    """With every middleware, without each in turn, without any: GET /health/live."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    figures: dict[str, Any] = {"requests": REQUESTS, "rounds": ROUNDS}

    def stack(middleware: list[Any]) -> Any:
        app.user_middleware = middleware
        return app.build_middleware_stack()

    async def with_stack(built: Any, rounds: int = ROUNDS) -> float:
        app.middleware_stack = built
        return await _microseconds(app, "/health/live", rounds)

    present = list(app.user_middleware)
    full = stack(present)
    figures["all middleware"] = round(await with_stack(full), 1)
    costs = {}
    for middleware in present:
        without = stack([m for m in present if m is not middleware])
        # With and without in turn, so that both meet the same machine;
        # the median of the differences.
        differences = []
        for _ in range(ROUNDS):
            differences.append(await with_stack(full, 1) - await with_stack(without, 1))
        differences.sort()
        name = getattr(middleware.cls, "__name__", repr(middleware.cls))
        costs[name] = round(differences[ROUNDS // 2], 1)
    figures["no middleware"] = round(await with_stack(stack([])), 1)
    figures["each middleware"] = costs
    app.middleware_stack = stack(present)  # as it was, for the routes

    async def live(_: Any) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    bare = Starlette(routes=[Route("/health/live", live)])
    figures["bare Starlette route"] = round(await _microseconds(bare, "/health/live"), 1)
    return figures


# --- The database -------------------------------------------------------------------


async def prepare_database(data: Path, secret_key: str) -> tuple[str, str]:
    """The database URL and its kind: PostgreSQL recreated and migrated, else SQLite."""
    from bench import production, seed

    url = DATABASE_URL
    try:
        await seed.recreate_database(url)
        kind = "postgresql"
    except seed.SeedError as error:
        _say(f"{error}; on SQLite instead")
        url = f"sqlite+aiosqlite:///{data / 'stack.db'}"
        kind = "sqlite"
    environment = production.environment(url, "WARNING", SECRET_KEY=secret_key)
    environment["DATA_DIR"] = str(data)
    with (data / "migrate.log").open("a") as log:
        await asyncio.to_thread(production.migrate, environment, log)
    return url, kind


@dataclass
class Seeded:
    user_id: int
    token: str
    role: Any  # app.users.models.Role
    product_id: int
    version: int


async def seed_through_the_app(app: FastAPI) -> Seeded:
    """One user (with an access token from the app's codec) and PAGE products of theirs."""
    from app.products.schemas import ProductCreate
    from app.products.service import ProductService
    from app.users.models import Actor
    from app.users.schemas import UserCreate
    from app.users.service import UserService

    state = app.state
    async with state.database.sessionmaker() as session, session.begin():
        users = UserService(session, state.password_hasher, state.settings)
        user = await users.register(
            UserCreate(
                username="stack",
                email="stack@example.com",
                password=secrets.token_urlsafe(16),
                full_name="Stack Bench",
            ),
            verified=True,
        )
        products = ProductService(session)
        owner = Actor(user.id, user.role)
        created = [
            await products.create(
                owner,
                ProductCreate(
                    name=f"Stack item {n}",
                    description="Seeded by bench.stack.",
                    price=Decimal("9.90") + n,
                    tax=Decimal("1.88"),
                    sku=f"STACK-{n:04d}",
                ),
            )
            for n in range(1, PAGE + 1)
        ]
    token = state.token_codec.issue("access", user.id, user.token_version).token
    return Seeded(user.id, token, user.role, created[0].id, created[0].version)


# --- Dependencies -------------------------------------------------------------------


@contextlib.contextmanager
def _analysed_once() -> Iterator[dict[str, int]]:
    """FastAPI's dependency analysis, memoised while the routes are measured.

    With anything in `app.dependency_overrides`, FastAPI's solve_dependencies
    calls get_dependant() for every dependency of every request (to swap in
    the overrides), re-reading signatures: hundreds of µs that production,
    with no overrides, never spends. The same analysis, made once per
    dependency, is what it would find every time.
    """
    from fastapi.dependencies import utils

    original = utils.get_dependant
    analysed: dict[tuple[Any, ...], Any] = {}
    counts = {"analysed": 0, "reused": 0}

    def get_dependant(**arguments: Any) -> Any:
        # Cheap, for it runs for every dependency of every request: the
        # values alone, in the order of solve_dependencies' one call.
        key = tuple(tuple(v) if type(v) is list else v for v in arguments.values())
        found = analysed.get(key)
        if found is None:
            found = analysed[key] = original(**arguments)
            counts["analysed"] += 1
        else:
            counts["reused"] += 1
        ANALYSES[0] += 1
        return found

    utils.get_dependant = get_dependant
    try:
        yield counts
    finally:
        utils.get_dependant = original


async def _unrelated() -> None:
    """Overridden for the baselines: installs the override path, replaces nothing used."""


@dataclass
class Request:
    scope: dict[str, Any]
    body: bytes = b""


@dataclass
class Dependency:
    """A dependency of a route, what replaces it, and what overriding it takes with it."""

    label: str
    call: Callable[..., Any]
    # Given the request's session, opened beforehand: what the override returns.
    value: Callable[[AsyncSession], Any]
    note: str = ""
    pulls_in: list[str] = field(default_factory=list)
    writes_in_session: bool = False  # the value writes in the session it is given
    current: Any = None  # the value made for the next request

    def __post_init__(self) -> None:
        # One function for the whole run: FastAPI's analysis of it is memoised
        # (a new function per request would be analysed every time).
        async def computed_before() -> Any:
            return self.current

        self.replacement: Callable[[], Awaitable[Any]] = computed_before


@dataclass
class Variant:
    label: str
    replaced: list[Dependency]
    # A write in the session opened beforehand while the request's own
    # session holds a transaction: SQLite (one writer) cannot run both.
    two_transactions: bool = False


@dataclass
class RouteCase:
    name: str
    status: int
    request: Callable[[], Request]
    dependencies: list[Dependency]
    # The session several dependencies share (writes): priced on its own.
    shared: Dependency | None = None
    on_headers: Callable[[Headers], None] | None = None
    variants: list[Variant] = field(default_factory=list)
    pairs: int = READ_PAIRS


def _json_request(
    method: str, path: str, token: str, body: bytes, *extra: tuple[bytes, bytes]
) -> Request:
    headers = [
        (b"authorization", b"Bearer " + token.encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    return Request(_route_scope(path, method, headers), body)


def _names(dependant: Any) -> list[str]:
    """The sub-dependencies a dependency resolves, by name (each once)."""
    found: list[str] = []
    for sub in dependant.dependencies:
        call = sub.call
        name = getattr(call, "__name__", None) or type(call).__name__
        for each in (name, *_names(sub)):
            if each not in found:
                found.append(each)
    return found


def route_cases(app: FastAPI, seeded: Seeded, signed_in_row: Any) -> list[RouteCase]:
    from fastapi.dependencies.utils import get_dependant

    from app.auth.dependencies import get_actor, get_signed_in_row
    from app.core.database import get_session
    from app.idempotency.service import IdempotencyService
    from app.products.router import (
        get_idempotency_service,
        get_product_reads,
        get_product_service,
    )
    from app.products.service import ProductReads, ProductService
    from app.users.models import Actor

    state = app.state
    product = f"/api/v1/products/{seeded.product_id}"
    reads = ProductReads(state.database, state.settings.exact_total_limit, replica_allowed=True)
    actor = Actor(seeded.user_id, seeded.role)

    product_reads = Dependency(
        "get_product_reads",
        get_product_reads,
        lambda _: reads,
        "the read service: the database, the settings, whether a replica may answer",
    )
    signed_in = Dependency(
        "get_signed_in_row",
        get_signed_in_row,
        lambda _: signed_in_row,
        "the token check: decode the bearer token, read the user (one statement, no "
        "transaction), check the token still holds",
    )
    actor_dependency = Dependency(
        "get_actor",
        get_actor,
        lambda _: actor,
        "the token check for a change: decode the token, read the user's id and role in "
        "the request's transaction",
    )
    product_service = Dependency(
        "get_product_service",
        get_product_service,
        ProductService,
        "the write service on the request's session",
        writes_in_session=True,
    )
    idempotency_service = Dependency(
        "get_idempotency_service",
        get_idempotency_service,
        IdempotencyService,
        "the Idempotency-Key service on the request's session (unused without the header)",
    )
    session = Dependency(
        "get_session",
        get_session,
        lambda opened: opened,
        "the request's unit of work: a session from the pool, BEGIN, COMMIT, the "
        "after-commit hooks (the events relay's wake-up), the session's close",
        writes_in_session=True,
    )
    for dependency in (
        product_reads,
        signed_in,
        actor_dependency,
        product_service,
        idempotency_service,
        session,
    ):
        dependency.pulls_in = _names(get_dependant(path="", call=dependency.call))

    version = seeded.version
    patches = creates = 0

    def patch() -> Request:
        nonlocal patches
        patches += 1
        body = b'{"price":"%d.%02d"}' % (10 + patches % 500, patches % 100)
        return _json_request("PATCH", product, seeded.token, body, (b"if-match", b'"%d"' % version))

    def patched(headers: Headers) -> None:
        nonlocal version
        for name, value in headers:
            if name == b"etag":
                version = int(value.strip(b'"'))

    def create() -> Request:
        nonlocal creates
        creates += 1
        body = (
            b'{"name":"Stack item %d","description":"Made by bench.stack.",'
            b'"price":"%d.%02d","tax":"1.90","sku":"STACK-C%d"}'
            % (creates, 10 + creates % 90, creates % 100, creates)
        )
        return _json_request("POST", "/api/v1/products", seeded.token, body)

    cases = [
        RouteCase(
            "GET /api/v1/products/{id}",
            200,
            lambda: Request(_route_scope(product)),
            [product_reads],
        ),
        RouteCase(
            "GET /api/v1/products",
            200,
            lambda: Request(_route_scope("/api/v1/products")),
            [product_reads],
        ),
        RouteCase(
            "GET /api/v1/users/me",
            200,
            lambda: Request(
                _route_scope(
                    "/api/v1/users/me",
                    headers=[(b"authorization", b"Bearer " + seeded.token.encode())],
                )
            ),
            [signed_in],
        ),
        RouteCase(
            "PATCH /api/v1/products/{id}",
            200,
            patch,
            [actor_dependency, product_service],
            shared=session,
            on_headers=patched,
            pairs=WRITE_PAIRS,
        ),
        RouteCase(
            "POST /api/v1/products",
            201,
            create,
            [actor_dependency, product_service, idempotency_service],
            shared=session,
            pairs=WRITE_PAIRS,
        ),
    ]
    for case in cases:
        case.variants = [
            Variant(d.label, [d], two_transactions=d is product_service) for d in case.dependencies
        ]
        if case.shared is not None:
            case.variants.append(Variant(case.shared.label, [case.shared]))
        if len(case.dependencies) > 1:
            case.variants.append(Variant("all", list(case.dependencies)))
    return cases


Overrides = dict[Callable[..., Any], Callable[..., Any]]
# How many times FastAPI's override path has looked a dependency up, so far.
ANALYSES = [0]


def _caller(app: FastAPI, case: RouteCase) -> Callable[[], Awaitable[None]]:
    """One call of the route through the whole app, its status checked."""
    expected, on_headers = case.status, case.on_headers
    body = b""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            if message["status"] != expected:
                raise RuntimeError(f"{case.name} answered {message['status']}, not {expected}")
            if on_headers is not None:
                on_headers(message["headers"])

    async def call() -> None:
        nonlocal body
        request = case.request()
        body = request.body
        await app(request.scope, receive, send)

    return call


async def _one(app: FastAPI, call: Callable[[], Awaitable[None]], arm: Arm) -> float:
    """CPU µs of one call of the route.

    Before the clock starts: a session opened (its transaction begun when
    the write services are to write in it) and the replaced dependencies'
    values made. The route's changes are flushed on the clock (they are the
    route's work, which the commit would otherwise send); after it stops,
    that session is committed and closed.
    """
    session: AsyncSession = app.state.database.sessionmaker()
    for dependency in arm.replaced:
        dependency.current = dependency.value(session)
    app.dependency_overrides = arm.overrides
    if arm.begins:
        # A statement, for asyncpg only sends BEGIN with the first one.
        await (await session.connection()).exec_driver_sql("SELECT 1")
    try:
        looked_up = ANALYSES[0]
        started = time.process_time()
        await call()
        if arm.begins:
            await session.flush()
        spent = time.process_time() - started
        arm.lookups = ANALYSES[0] - looked_up
        return spent * 1e6
    finally:
        app.dependency_overrides = {}
        await session.commit()
        await session.close()


@dataclass
class Arm:
    """How a request is made: `replaced` overridden (with `overrides`; empty, an
    unrelated override: the baselines), or as production runs (`plain`)."""

    replaced: Sequence[Dependency] = ()
    plain: bool = False

    def __post_init__(self) -> None:
        overrides: Overrides = {d.call: d.replacement for d in self.replaced}
        self.overrides = {} if self.plain else overrides or {_unrelated: _unrelated}
        self.begins = any(d.writes_in_session for d in self.replaced)
        self.lookups = 0  # the override path's, per request


async def _pairs(app: FastAPI, case: RouteCase, one: Arm, other: Arm) -> list[tuple[float, float]]:
    """case.pairs requests of each arm, in turn, each going first every other time."""
    hub, call = app.state.event_hub, _caller(app, case)
    pairs = []
    for n in range(case.pairs):
        if n % 2 == 0:
            first = await _one(app, call, one)
            pairs.append((first, await _one(app, call, other)))
        else:
            second = await _one(app, call, other)
            pairs.append((await _one(app, call, one), second))
        if n % 20 == 19:
            await hub.publish_now()  # the writes' events, off the clock
    await hub.publish_now()
    return pairs


def _trimmed(values: Sequence[float]) -> list[float]:
    ordered = sorted(values)
    cut = int(len(ordered) * TRIM)
    return ordered[cut : len(ordered) - cut]


def _mean(values: Sequence[float]) -> float:
    """The mean with the tenth at each end left out: robust to the odd preempted request."""
    kept = _trimmed(values)
    return sum(kept) / len(kept)


def _difference(pairs: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """The (trimmed) mean of the pairs' differences, and its standard error."""
    kept = _trimmed([one - other for one, other in pairs])
    mean = sum(kept) / len(kept)
    variance = sum((d - mean) ** 2 for d in kept) / max(len(kept) - 1, 1)
    return round(mean, 1), round((variance / len(kept)) ** 0.5, 1)


async def measure_route(app: FastAPI, case: RouteCase, sqlite: bool) -> dict[str, Any]:
    plain, baseline = Arm(plain=True), Arm()
    call = _caller(app, case)
    for _ in range(20):  # warm up: the pool's connections, the statement caches
        await _one(app, call, plain)
    # As production runs, against the baseline of the pairs below: what
    # FastAPI's override path costs (its look-up of every dependency).
    checked = await _pairs(app, case, baseline, plain)
    machinery = _difference(checked)[0]
    costs: dict[str, float | None] = {}
    errors: dict[str, float | None] = {}
    for variant in case.variants:
        if sqlite and variant.two_transactions:
            costs[variant.label] = errors[variant.label] = None
            continue
        replaced = Arm(variant.replaced)
        cost, errors[variant.label] = _difference(await _pairs(app, case, baseline, replaced))
        # The replaced arm skips the look-ups of what the replaced dependencies
        # pulled in: that share of the override path's cost is not theirs.
        skipped = (baseline.lookups - replaced.lookups) / max(baseline.lookups, 1)
        costs[variant.label] = round(cost - machinery * skipped, 1)
    everything = "all" if "all" in costs else case.dependencies[0].label
    whole = _mean([whole for _, whole in checked])
    figures: dict[str, Any] = {
        "pairs": case.pairs,
        "whole request": round(whole, 1),
        "override machinery": machinery,
        # The whole request less what all its dependencies cost: measured
        # against the same baseline, firmer than the replaced requests' own
        # mean, taken at another time.
        "route without its dependencies": round(whole - (costs[everything] or 0.0), 1),
        "dependencies": {d.label: costs[d.label] for d in case.dependencies},
    }
    if case.shared is not None:
        figures["shared session"] = {case.shared.label: costs[case.shared.label]}
    if "all" in costs:
        figures["all dependencies"] = costs["all"]
    figures["standard errors"] = errors
    return figures


async def measure_relay(app: FastAPI, case: RouteCase) -> float:
    """CPU µs of the events relay's pass that publishes one write's event.

    After a write's commit, get_session's after-commit hook wakes the relay,
    which publishes in a transaction of its own, after the response. Timed
    here alone: a pass after each single write, as with one client (under
    load one pass publishes the events of several writes).
    """
    hub, call = app.state.event_hub, _caller(app, case)
    passes = []
    for _ in range(case.pairs):
        await call()
        started = time.process_time()
        await hub.publish_now()
        passes.append((time.process_time() - started) * 1e6)
    return _mean(passes)


async def measure_dependencies(app: FastAPI, kind: str) -> dict[str, Any]:
    seeded = await seed_through_the_app(app)
    cases = route_cases(app, seeded, await _signed_in_row(app, seeded))
    # The events relay and fan-out work on timers and after each write's
    # commit, beside the requests: stopped, so that the CPU timed is the
    # requests' alone (their events are published off the clock; the
    # relay's pass is priced on its own below).
    await app.state.event_hub.stop()
    gc.collect()
    gc.freeze()
    routes = {}
    with _analysed_once() as analysis:
        for case in cases:
            routes[case.name] = await measure_route(app, case, kind == "sqlite")
    if analysis["reused"] == 0:
        raise RuntimeError("FastAPI no longer calls get_dependant per request: see _analysed_once")
    patch = next(case for case in cases if case.name.startswith("PATCH"))
    relay = round(await measure_relay(app, patch), 1)
    described = {d.label: d for case in cases for d in (*case.dependencies, case.shared) if d}
    skipped = dict(NOT_MEASURED)
    if kind == "sqlite":
        skipped["get_product_service alone (writes)"] = (
            "SQLite has one writer: the session opened beforehand, writing, and the "
            "request's own, which get_actor still opens, cannot both hold a transaction"
        )
    return {
        "method": "CPU µs per request through the whole app (ASGI, no HTTP). A dependency's "
        "cost: the mean of pairs (whole, replaced through app.dependency_overrides by a value "
        "made before the request) of their differences, the tenth at each end left out, less "
        "the share of the override path's own cost (override machinery) that its "
        "sub-dependencies' look-ups made; it includes what it pulls in. Route without its "
        "dependencies: whole request less all dependencies. The events relay is stopped "
        "meanwhile and priced alone.",
        "database": kind,
        "trimmed": TRIM,
        "routes": routes,
        "events relay pass per write": relay,
        "what each dependency does": {
            label: {"does": d.note, "pulls in": d.pulls_in} for label, d in described.items()
        },
        "not measured": skipped,
    }


async def _signed_in_row(app: FastAPI, seeded: Seeded) -> Any:
    from app.auth.dependencies import get_signed_in_row

    state = app.state
    return await get_signed_in_row(seeded.token, state.token_codec, state.database)


async def measure() -> dict[str, Any]:
    from app.core.config import Settings
    from app.main import create_app

    data = Path(tempfile.mkdtemp(prefix="bench-stack-"))
    secret_key = "bench-stack-key-" + secrets.token_urlsafe(32)
    url, kind = await prepare_database(data, secret_key)
    settings = Settings(
        _env_file=None,
        environment="production",
        secret_key=secret_key,
        database_url=url,
        data_dir=data,
        log_level="WARNING",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        began = time.monotonic()
        figures = await measure_middleware(app)
        _say(f"middleware measured in {time.monotonic() - began:.0f} s")
        began = time.monotonic()
        figures["dependencies"] = await measure_dependencies(app, kind)
        _say(f"dependencies measured on {kind} in {time.monotonic() - began:.0f} s")
    return figures


def _say(message: str) -> None:
    print(f"bench.stack: {message}", file=sys.stderr, flush=True)


def _print(figures: dict[str, Any]) -> None:
    print("CPU per GET /health/live, in one process, no HTTP (µs):")
    for name in ("all middleware", "no middleware", "bare Starlette route"):
        print(f"  {name:<40}{figures[name]:>8.1f}")
    for name, cost in figures["each middleware"].items():
        print(f"  {'  ' + name:<40}{cost:>8.1f}")
    dependencies = figures["dependencies"]
    print(
        f"CPU per request, in one process, no HTTP, on {dependencies['database']} (µs; "
        "a dependency's cost includes its sub-dependencies', ± a standard error):"
    )

    def shown(value: float | None, error: float | None) -> str:
        return "not measured" if value is None else f"{value:.1f} ± {error:.1f}"

    for route, row in dependencies["routes"].items():
        errors = row["standard errors"]
        print(f"  {route}")
        print(f"    {'whole request':<38}{row['whole request']:>8.1f}")
        print(f"    {'without its dependencies':<38}{row['route without its dependencies']:>8.1f}")
        for label, value in row["dependencies"].items():
            print(f"      {label:<36}{shown(value, errors[label]):>16}")
        for label, value in row.get("shared session", {}).items():
            print(f"      {label + ' (shared by them)':<36}{shown(value, errors[label]):>16}")
        if "all dependencies" in row:
            print(f"      {'all of them':<36}{shown(row['all dependencies'], errors['all']):>16}")
    relay = dependencies["events relay pass per write"]
    print(f"  {'the events relay pass after one write':<40}{relay:>8.1f}")


def main() -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    figures = asyncio.run(measure())
    _print(figures)
    results = Path(os.environ.get("BENCH_RESULTS") or ROOT / "bench" / "results")
    results.mkdir(parents=True, exist_ok=True)
    (results / "stack-latest.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
