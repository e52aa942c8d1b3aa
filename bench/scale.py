"""Scale benchmark: the product list's queries at 10,000 and at 1,000,000 rows.

`make bench-scale`, `python -m bench.scale` or `python bench/scale.py`, from the repo root:

1. drops and recreates a PostgreSQL database and migrates it with
   `python -m app migrate`, so the schema (indexes included) is exactly what
   the migrations build;
2. seeds 1,000 owners and the first 10,000 products with COPY, from a fixed
   random seed (names, descriptions, prices and owners spread the way a real
   catalogue's are: a few sellers own many products, prices cluster at .99),
   then VACUUM ANALYZE;
3. starts the production command (Gunicorn, 2 Uvicorn workers,
   ENVIRONMENT=production, LOG_LEVEL=WARNING) and, with one HTTP client on
   one keep-alive connection, sends each query a warm-up and then N times
   (200 by default), one request at a time, timing each;
4. stops the server, inserts the rest of the rows up to 1,000,000 (the first
   10,000 unchanged), VACUUM ANALYZE, starts it again and measures again;
5. prints a table (p50 / p99 at both sizes, the growth of p99, the 50 ms p99
   target at the large size), and writes it as JSON to
   `bench/results/scale-<time>.json` and `bench/results/scale-latest.json`.

With BENCH_SCALE_EXPLAIN=1 it also prints, for each query above the target,
the SQL the service ran for it with EXPLAIN (ANALYZE, BUFFERS): the list
service is run in this process against the same database, its statements are
recorded, and each is explained.

Settings, from the environment:
  BENCH_SCALE_DATABASE_URL  the database to recreate
                            (default postgresql://postgres@127.0.0.1:5432/storefront_scale)
  BENCH_SCALE_ROWS          products at the large size (default 1000000)
  BENCH_SCALE_SMALL_ROWS    products at the small size (default 10000)
  BENCH_SCALE_REQUESTS      timed requests per query (default 200)
  BENCH_SCALE_WARMUP        untimed requests per query before those (default 20)
  BENCH_SCALE_WORKERS       Gunicorn workers (default 2)
  BENCH_SCALE_SEED          seed of the generated catalogue (default 1)
  BENCH_SCALE_QUERY_SECONDS a query still running after this long stops early, with
                            fewer requests (at least 10) than asked (default 120)
  BENCH_SCALE_EXPLAIN       1 to print query plans of the slow queries
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/scale.py` puts bench/ there, not the repo
    sys.path.insert(0, str(ROOT))

from bench import production  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PRODUCTS = "/api/v1/products"

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/storefront_scale"
TARGET_P99_MS = 50.0
OWNERS = 1000
COPY_CHUNK = 50_000
REQUEST_TIMEOUT = 30.0
# What gunicorn.conf.py reads from the environment: left out, so that its own
# defaults and the command line decide.
_GUNICORN_VARIABLES = (
    *("BIND", "PORT", "WEB_CONCURRENCY", "GRACEFUL_TIMEOUT", "FORWARDED_ALLOW_IPS"),
    "KEEPALIVE_SECONDS",
    "PROMETHEUS_MULTIPROC_DIR",
)


class ScaleError(Exception):
    """The benchmark could not run."""


# --- Settings -----------------------------------------------------------------


@dataclass(frozen=True)
class ScaleConfig:
    database_url: str
    rows: int
    small_rows: int
    requests: int
    warmup: int
    workers: int
    seed: int
    budget: float
    explain: bool

    @classmethod
    def from_environment(cls) -> ScaleConfig:
        config = cls(
            database_url=os.environ.get("BENCH_SCALE_DATABASE_URL") or DEFAULT_DATABASE_URL,
            rows=_integer("BENCH_SCALE_ROWS", 1_000_000),
            small_rows=_integer("BENCH_SCALE_SMALL_ROWS", 10_000),
            requests=_integer("BENCH_SCALE_REQUESTS", 200),
            warmup=_integer("BENCH_SCALE_WARMUP", 20, minimum=0),
            workers=_integer("BENCH_SCALE_WORKERS", 2),
            seed=_integer("BENCH_SCALE_SEED", 1, minimum=0),
            budget=_integer("BENCH_SCALE_QUERY_SECONDS", 120),
            explain=os.environ.get("BENCH_SCALE_EXPLAIN", "") not in ("", "0"),
        )
        if config.small_rows < 100 or config.rows < config.small_rows:
            raise ScaleError("need 100 <= BENCH_SCALE_SMALL_ROWS <= BENCH_SCALE_ROWS")
        return config


def _integer(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise ScaleError(f"{name} must be an integer, not {raw!r}") from None
    if value < minimum:
        raise ScaleError(f"{name} must be at least {minimum}")
    return value


# --- The catalogue ------------------------------------------------------------

BRANDS = (
    *("Nordhaus", "Atelier Rive", "Kanso", "Brightmoor", "Calder & Finch", "Tessellate"),
    *("Oakhollow", "Lumen Works", "Fjordline", "Marlowe", "Ironbark", "Petrichor", "Solenne"),
    *("Hearth & Co", "Vireo", "Quillon", "Basalt", "Wrenfield", "Copperleaf", "Tidewater"),
    *("Kestrel", "Arbor Lane", "Maison Clé", "Greystone", "Halcyon", "Juniper Row", "Kiln"),
    *("Ostara", "Pennant", "Rowan", "Saltmarsh", "Thistle", "Umbra", "Verdant", "Wildwood"),
)
ADJECTIVES = (
    *("compact", "classic", "modern", "rustic", "slim", "oversized", "foldable", "stackable"),
    *("vintage", "handmade", "minimal", "sturdy", "lightweight", "deluxe", "everyday"),
    *("portable", "round", "square", "tall", "low", "wide", "narrow", "soft", "quilted"),
    *("brushed", "polished", "matte", "glazed", "woven", "insulated", "adjustable", "large"),
    *("small", "mini", "double", "single", "heritage", "nordic", "coastal", "industrial"),
)
MATERIALS = (
    *("oak", "walnut", "ash", "birch", "bamboo", "teak", "pine", "cherry", "maple"),
    *("steel", "brass", "copper", "aluminium", "cast iron", "porcelain", "stoneware"),
    *("linen", "cotton", "wool", "leather", "velvet", "rattan", "jute", "glass", "marble"),
    *("concrete", "cork", "silicone", "enamel", "terracotta", "crème", "slate", "felt"),
)
NOUNS = (
    *("teapot", "kettle", "mug", "cup", "saucer", "bowl", "plate", "jug", "carafe", "tumbler"),
    *("side table", "desk", "chair", "stool", "bench", "bookshelf", "sideboard", "wardrobe"),
    *("lamp", "pendant light", "floor lamp", "candle holder", "mirror", "clock", "vase"),
    *("planter", "basket", "tray", "cutting board", "knife block", "spice rack", "colander"),
    *("frying pan", "saucepan", "casserole dish", "baking tray", "whisk", "ladle", "spatula"),
    *("throw", "cushion", "rug", "blanket", "duvet cover", "pillowcase", "towel", "bath mat"),
    *("coat hook", "umbrella stand", "shoe rack", "doormat", "storage box", "magazine rack"),
    *("notebook", "pen holder", "desk organiser", "letter tray", "bookend", "photo frame"),
    *("watering can", "bird feeder", "garden kneeler", "plant mister", "seed tray", "trowel"),
    *("wine rack", "ice bucket", "cocktail shaker", "decanter", "coaster set", "bottle opener"),
)
COLOURS = (
    *("white", "black", "charcoal", "sand", "sage", "terracotta", "ochre", "navy", "forest"),
    *("dusty pink", "cream", "smoke grey", "mustard", "rust", "teal", "ivory", "graphite"),
)
ROOMS = (
    *("kitchen", "living room", "bedroom", "bathroom", "hallway", "study", "garden"),
    *("balcony", "dining room", "nursery", "workshop", "café", "office"),
)
FEATURES = (
    "Dishwasher safe.",
    "Hand wash only.",
    "Ships flat-packed with every fixing included.",
    "Each piece is finished by hand, so no two are exactly alike.",
    "Made from responsibly sourced materials.",
    "Comes with a ten-year guarantee.",
    "Assembly takes about twenty minutes.",
    "Wipe clean with a damp cloth.",
    "Sold individually.",
    "Sold as a set of four.",
    "Designed in Köln, made in Porto.",
    "Suitable for indoor and covered outdoor use.",
    "Oven safe up to 220 °C.",
    "Not suitable for children under three.",
    "Limited edition: numbered on the base.",
)
# In about one description in a thousand: what a rare search finds.
RARE_NOTE = "Ex-display piece: light marks on the underside."
_EPOCH = datetime(2023, 1, 1, tzinfo=UTC)
# Not a hash of anything: the owners cannot sign in, and need not.
_PASSWORD_PLACEHOLDER = "!benchmark-owner-cannot-sign-in"  # noqa: S105


def owner_rows(count: int) -> list[tuple[Any, ...]]:
    moment = _EPOCH - timedelta(days=30)
    return [
        (
            n,
            f"owner{n:04d}",
            f"owner{n:04d}@example.com",
            f"Owner {n}",
            _PASSWORD_PLACEHOLDER,
            "user",
            True,
            1,
            moment,
            moment,
        )
        for n in range(1, count + 1)
    ]


OWNER_COLUMNS = (
    *("id", "username", "email", "full_name", "password_hash", "role", "is_active"),
    *("token_version", "created_at", "updated_at"),
)
PRODUCT_COLUMNS = (
    *("id", "name", "description", "price", "tax", "sku", "owner_id", "version"),
    *("created_at", "updated_at"),
)


class Catalogue:
    """Products 1, 2, 3, ... drawn one after another from one seeded generator.

    Drawing row n never depends on how many rows are asked for in all, so the
    first 10,000 rows of the large catalogue are the small catalogue.
    """

    def __init__(self, seed: int, owners: int) -> None:
        self._random = random.Random(seed)  # noqa: S311  (test data, reproducible on purpose)
        self._owners = owners
        self._next_id = 1
        self._moment = _EPOCH

    def rows(self, count: int) -> Iterator[tuple[Any, ...]]:
        for _ in range(count):
            yield self._row()

    def _row(self) -> tuple[Any, ...]:
        rng = self._random
        product_id = self._next_id
        self._next_id += 1
        # Products arrive about one a minute; an import now and then adds a
        # batch sharing one timestamp (ties for the created_at sort).
        if rng.random() >= 0.05:
            self._moment += timedelta(seconds=rng.expovariate(1 / 60))
        created_at = self._moment
        updated = rng.random() < 0.2
        updated_at = created_at + timedelta(days=rng.uniform(0, 30)) if updated else created_at
        material = rng.choice(MATERIALS)
        noun = rng.choice(NOUNS)
        name = f"{rng.choice(BRANDS)} {rng.choice(ADJECTIVES)} {material} {noun}"
        if rng.random() < 0.3:
            name += f", {rng.choice(COLOURS)}"
        description = None
        if rng.random() >= 0.1:
            adjective = rng.choice(ADJECTIVES)
            article = "An" if adjective[0] in "aeiou" else "A"
            parts = [
                f"{article} {adjective} {noun} in {rng.choice(COLOURS)} {material}, "
                f"made for the {rng.choice(ROOMS)}.",
                rng.choice(FEATURES),
            ]
            if rng.random() < 0.5:
                parts.append(f"Pairs well with our {rng.choice(MATERIALS)} {rng.choice(NOUNS)}.")
            if rng.random() < 0.3:
                parts.append(rng.choice(FEATURES))
            if rng.random() < 0.001:
                parts.append(RARE_NOTE)
            description = " ".join(parts)
        # Log-normal prices around 30, most ending in .99, .49 or .00: many ties.
        whole = min(int(math.exp(rng.gauss(3.4, 1.1))), 49_999)
        cents = rng.choice((99, 99, 99, 49, 0, 0, 95, rng.randrange(100)))
        price = Decimal(whole) + Decimal(cents) / 100
        tax = (price * Decimal("0.2")).quantize(Decimal("0.01")) if rng.random() < 0.7 else None
        sku = f"SKU-{product_id:08d}" if rng.random() < 0.8 else None
        # A few sellers own many products: owner 1 the most.
        owner_id = 1 + int(self._owners * rng.random() ** 2.5)
        version = 1 + (rng.randrange(1, 4) if updated else 0)
        return (
            *(product_id, name, description, price, tax, sku, owner_id, version),
            *(created_at, updated_at),
        )


# --- Database -----------------------------------------------------------------


def _server_url(database_url: str) -> tuple[str, str]:
    """The URL of the server's `postgres` database (asyncpg form) and the database's name."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    name = url.database or ""
    if not url.drivername.startswith("postgresql") or not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise ScaleError(
            "BENCH_SCALE_DATABASE_URL must be postgresql://.../<name of letters, digits, _>"
        )
    return name, url.set(drivername="postgresql", database="postgres").render_as_string(False)


def _asyncpg_url(database_url: str) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


async def recreate_database(database_url: str) -> None:
    name, server = _server_url(database_url)
    try:
        connection = await asyncpg.connect(server, timeout=5)
    except Exception as error:  # connection refused, timeout, authentication, ...
        reason = " ".join(str(error).split()) or type(error).__name__
        raise ScaleError(f"PostgreSQL is unreachable or refused: {reason}") from None
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def seed_owners(database_url: str, count: int) -> None:
    connection = await asyncpg.connect(_asyncpg_url(database_url))
    try:
        await connection.copy_records_to_table(
            "users", records=owner_rows(count), columns=OWNER_COLUMNS
        )
        await connection.execute(
            "SELECT setval(pg_get_serial_sequence('users', 'id'), (SELECT max(id) FROM users))"
        )
    finally:
        await connection.close()


async def seed_products(database_url: str, catalogue: Catalogue, count: int) -> None:
    """Appends `count` products with COPY, then VACUUM ANALYZE."""
    connection = await asyncpg.connect(_asyncpg_url(database_url))
    try:
        left = count
        while left > 0:
            chunk = min(left, COPY_CHUNK)
            await connection.copy_records_to_table(
                "products", records=list(catalogue.rows(chunk)), columns=PRODUCT_COLUMNS
            )
            left -= chunk
        await connection.execute(
            "SELECT setval(pg_get_serial_sequence('products', 'id'), "
            "(SELECT max(id) FROM products))"
        )
        # As autovacuum would eventually: statistics for the planner, the
        # visibility map for index-only scans, GIN pending lists merged.
        await connection.execute("VACUUM ANALYZE users")
        await connection.execute("VACUUM ANALYZE products")
    finally:
        await connection.close()


async def database_size(database_url: str) -> dict[str, Any]:
    connection = await asyncpg.connect(_asyncpg_url(database_url))
    try:
        rows = await connection.fetch(
            "SELECT c.relname, pg_relation_size(c.oid) AS bytes FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = 'products'::regclass ORDER BY c.relname"
        )
        table = await connection.fetchval("SELECT pg_table_size('products')")
        return {
            "products_table_mib": round(table / 2**20, 1),
            "products_indexes_mib": {
                row["relname"]: round(row["bytes"] / 2**20, 1) for row in rows
            },
        }
    finally:
        await connection.close()


# --- The queries --------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """One kind of request; `params` gives the query string of the i-th request."""

    key: str
    label: str
    params: Callable[[int], dict[str, Any]]
    path: Callable[[int], str] = lambda _: PRODUCTS


@dataclass
class Setting:
    """What the queries need to know about the catalogue being measured."""

    rows: int
    ids: list[int]
    deep_cursor: str | None


SEARCH = "teapot"  # a noun: in about 1 name in 80, and in descriptions
RARE_SEARCH = "EX-DISPLAY"  # in about 1 description in 1,000; upper case
ACCENTED_SEARCH = "KÖLN"  # in about 1 description in 13; non-ASCII, upper case
SHORT_SEARCH = "ok"  # 2 characters: too short for trigrams
PRICE_RANGE = {"min_price": "20", "max_price": "50", "sort": "-price"}


def queries(setting: Setting) -> list[Query]:
    middle = setting.rows // 2
    found: list[Query] = [
        Query(
            "get_by_id",
            "a product by id",
            lambda _: {},
            lambda i: f"{PRODUCTS}/{setting.ids[i % len(setting.ids)]}",
        ),
        Query("first_page", "the first page", lambda _: {}),
        Query("deep_offset", "deep page, offset=rows/2", lambda _: {"offset": middle}),
    ]
    if setting.deep_cursor is not None:
        cursor = setting.deep_cursor
        found.append(
            Query("deep_cursor", "deep page, cursor at rows/2", lambda _: {"cursor": cursor})
        )
    found += [
        Query("search_q", f"search q={SEARCH}", lambda _: {"q": SEARCH}),
        Query("search_q_rare", f"search q={RARE_SEARCH}", lambda _: {"q": RARE_SEARCH}),
        Query("search_q_accented", f"search q={ACCENTED_SEARCH}", lambda _: {"q": ACCENTED_SEARCH}),
        Query("search_q_short", f"search q={SHORT_SEARCH}", lambda _: {"q": SHORT_SEARCH}),
        Query(
            "price_range_sorted",
            "price 20..50, sort=-price",
            lambda _: dict(PRICE_RANGE),
        ),
        Query("total_all", "total, no filter (limit=1)", lambda _: {"limit": 1}),
        Query(
            "total_filtered",
            "total, min_price=10 (limit=1)",
            lambda _: {"min_price": "10", "limit": 1},
        ),
    ]
    return found


@dataclass
class Figures:
    count: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    total: int | None  # what the page said, for the record
    items: int | None
    errors: dict[int, int]  # statuses other than 200, and how many

    @classmethod
    def of(cls, seconds: Sequence[float], body: Any, statuses: Counter[int]) -> Figures:
        ordered = sorted(seconds)
        page = body if isinstance(body, dict) and "items" in body else None
        return cls(
            count=len(ordered),
            p50_ms=round(_percentile(ordered, 50) * 1000, 2),
            p99_ms=round(_percentile(ordered, 99) * 1000, 2),
            mean_ms=round(sum(ordered) / len(ordered) * 1000, 2),
            max_ms=round(ordered[-1] * 1000, 2),
            total=page["total"] if page else None,
            items=len(page["items"]) if page else None,
            errors={status: n for status, n in sorted(statuses.items()) if status != 200},
        )


def _percentile(ordered: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of sorted values."""
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def measure(
    client: httpx.Client, query: Query, requests: int, warmup: int, budget: float
) -> Figures:
    """Times `requests` requests after `warmup` untimed ones, one at a time.

    A query still running after `budget` seconds stops early (its figures
    say how many requests they are over): the slowest queries before an
    index exists take seconds each. A status other than 200 is counted, not
    fatal: a query the database gives up on is a result too.
    """
    body: Any = None
    warm_until = time.monotonic() + budget / 4
    for i in range(warmup):
        client.get(query.path(i), params=query.params(i))
        if time.monotonic() > warm_until:
            break
    seconds: list[float] = []
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + budget
    for i in range(warmup, warmup + requests):
        started = time.perf_counter()
        response = client.get(query.path(i), params=query.params(i))
        seconds.append(time.perf_counter() - started)
        statuses[response.status_code] += 1
        if response.status_code == 200:
            body = response.json()
        if time.monotonic() > deadline and len(seconds) >= min(requests, 10):
            break
    return Figures.of(seconds, body, statuses)


def find_deep_cursor(client: httpx.Client, rows: int) -> str | None:
    """The cursor that continues the id-ordered list at row rows/2, if the service pages by cursor.

    The page that ends just before that row links to the next one by cursor
    (`Link: <...>; rel="next"`).
    """
    response = client.get(PRODUCTS, params={"offset": rows // 2 - 1, "limit": 1})
    response.raise_for_status()
    link = response.links.get("next")
    return httpx.URL(link["url"]).params.get("cursor") if link else None


def measure_all(
    base_url: str, rows: int, config: ScaleConfig
) -> tuple[dict[str, Figures], list[Query]]:
    rng = random.Random(config.seed)  # noqa: S311  (which ids to read, reproducible)
    ids = [rng.randrange(1, rows + 1) for _ in range(config.requests + config.warmup)]
    results: dict[str, Figures] = {}
    # One client, one keep-alive connection: one request at a time.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    with httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT, limits=limits) as client:
        setting = Setting(rows, ids, find_deep_cursor(client, rows))
        measured = queries(setting)
        for query in measured:
            figures = measure(client, query, config.requests, config.warmup, config.budget)
            results[query.key] = figures
            errors = f"   errors {figures.errors}" if figures.errors else ""
            print(
                f"  {query.label:<36} p50 {figures.p50_ms:8.2f} ms   p99 {figures.p99_ms:8.2f} ms"
                f"   n {figures.count}   total {figures.total}{errors}",
                flush=True,
            )
    return results, measured


# --- Query plans ----------------------------------------------------------------


async def explain(database_url: str, query: Query) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of each statement the list service runs for `query`."""
    from sqlalchemy import event
    from sqlalchemy.ext.asyncio import create_async_engine

    from app.core.config import Settings
    from app.products.repository import ProductReader
    from app.products.schemas import ProductQuery

    settings = Settings(database_url=database_url)
    engine = create_async_engine(
        settings.sqlalchemy_url, connect_args={"server_settings": {"jit": "off"}}
    )
    statements: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            statements.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    plans: list[str] = []
    try:
        async with engine.connect() as connection:
            await ProductReader(connection).list(
                ProductQuery.model_validate(query.params(0)), settings.exact_total_limit
            )
            event.remove(engine.sync_engine, "before_cursor_execute", record)
            for statement, parameters in statements:
                result = await connection.exec_driver_sql(
                    f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters
                )
                plan = "\n".join(f"    {line}" for line in result.scalars())
                plans.append(f"  {' '.join(statement.split())[:400]}\n{plan}")
            await connection.rollback()
    finally:
        await engine.dispose()
    return "\n".join(plans)


# --- The report -----------------------------------------------------------------


@dataclass
class Row:
    key: str
    label: str
    small: Figures | None
    large: Figures | None

    @property
    def growth(self) -> float | None:
        if self.small is None or self.large is None or self.small.p99_ms <= 0:
            return None
        return round(self.large.p99_ms / self.small.p99_ms, 1)

    @property
    def meets_target(self) -> bool | None:
        if self.large is None:
            return None
        return self.large.p99_ms < TARGET_P99_MS and not self.large.errors


@dataclass
class Report:
    started_at: str
    config: dict[str, Any]
    machine: dict[str, Any]
    sizes: dict[str, int]
    database: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for row, raw in zip(self.rows, data["rows"], strict=True):
            raw["growth_p99"] = row.growth
            raw["meets_target"] = row.meets_target
        data["target_p99_ms"] = TARGET_P99_MS
        data["all_targets_met"] = all(row.meets_target for row in self.rows)
        return data


def render(report: Report) -> str:
    small, large = report.sizes["small"], report.sizes["large"]
    lines = [
        f"scale  {small:,} -> {large:,} products, {report.config['requests']} requests per "
        f"query after {report.config['warmup']} warm-up, one client, "
        f"{report.config['workers']} Gunicorn workers",
        f"machine  {report.machine['cpus']} CPUs, load average {report.machine['load_average']}",
        "",
        f"{'query':<38}{f'{small:,} rows':>20}{f'{large:,} rows':>20}{'p99':>9}",
        f"{'':<38}{'p50':>10}{'p99':>10}{'p50':>10}{'p99':>10}{'growth':>9}  target",
    ]
    for row in report.rows:
        cells = []
        for figures in (row.small, row.large):
            cells += [f"{figures.p50_ms:.1f}", f"{figures.p99_ms:.1f}"] if figures else ["-", "-"]
        growth = f"x{row.growth:g}" if row.growth is not None else "-"
        verdict = {True: "ok", False: "MISSED", None: "-"}[row.meets_target]
        lines.append(
            f"{row.label:<38}" + "".join(f"{c:>10}" for c in cells) + f"{growth:>9}  {verdict}"
        )
    lines.append("")
    lines.append(f"times in ms; target: p99 under {TARGET_P99_MS:g} ms at {large:,} rows")
    return "\n".join(lines)


def write_results(report: Report, stamp: str) -> Path:
    text = json.dumps(report.as_json(), indent=2, ensure_ascii=False) + "\n"
    path = RESULTS / f"scale-{stamp}.json"
    path.write_text(text)
    (RESULTS / "scale-latest.json").write_text(text)
    return path


# --- Main ---------------------------------------------------------------------


def _measure_size(
    label: str, rows: int, config: ScaleConfig, environment: dict[str, str], log: TextIO
) -> dict[str, Figures]:
    server = production.Server.start(environment, config.workers, log)
    try:
        server.wait_until_ready()
        print(f"scale: measuring at {rows:,} rows ({label})", flush=True)
        figures, measured = measure_all(server.base_url, rows, config)
    finally:
        server.stop()
    if config.explain:
        for query in measured:
            if query.key != "get_by_id" and figures[query.key].p99_ms >= TARGET_P99_MS:
                print(f"\nEXPLAIN {query.label}:", flush=True)
                print(asyncio.run(explain(config.database_url, query)), flush=True)
    return figures


def scale(config: ScaleConfig) -> Report:
    started_at = datetime.now(UTC)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    log_path = RESULTS / f"scale-{stamp}.log"
    report = Report(
        started_at=started_at.isoformat(timespec="seconds"),
        config={
            **asdict(config),
            "database_url": re.sub(r"//[^@/]*@", "//", config.database_url),
        },
        machine={"cpus": os.cpu_count(), "load_average": round(os.getloadavg()[0], 2)},
        sizes={"small": config.small_rows, "large": config.rows},
    )
    timer = time.monotonic()
    print(f"scale: recreating {report.config['database_url']}", flush=True)
    asyncio.run(recreate_database(config.database_url))
    environment = production.environment(config.database_url, "WARNING")
    catalogue = Catalogue(config.seed, OWNERS)
    with log_path.open("a") as log:
        production.migrate(environment, log)
        asyncio.run(seed_owners(config.database_url, OWNERS))
        asyncio.run(seed_products(config.database_url, catalogue, config.small_rows))
        report.seconds["seed_small"] = round(time.monotonic() - timer, 1)
        small = _measure_size("small", config.small_rows, config, environment, log)

        timer = time.monotonic()
        print(f"scale: adding {config.rows - config.small_rows:,} products", flush=True)
        asyncio.run(seed_products(config.database_url, catalogue, config.rows - config.small_rows))
        report.seconds["seed_large"] = round(time.monotonic() - timer, 1)
        report.database = asyncio.run(database_size(config.database_url))
        large = _measure_size("large", config.rows, config, environment, log)

    labels = {q.key: q.label for q in queries(Setting(config.rows, [1], "x"))}
    for key, label in labels.items():
        if key in small or key in large:
            report.rows.append(Row(key, label, small.get(key), large.get(key)))
    report.machine["load_average_end"] = round(os.getloadavg()[0], 2)
    path = write_results(report, stamp)
    print()
    print(render(report))
    print(f"\nwritten to {path.relative_to(ROOT)} and scale-latest.json")
    return report


def main() -> int:
    try:
        scale(ScaleConfig.from_environment())
    except (ScaleError, production.ProductionError) as error:
        print(f"scale: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
