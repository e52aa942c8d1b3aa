"""The floor: what the benchmark's scenarios cost with nothing but the work itself.

Bare Starlette routes over an asyncpg pool, served like the service
(Gunicorn, Uvicorn workers with uvloop and httptools):

    gunicorn bench.floor.app:app -k uvicorn_worker.UvicornWorker --workers 2 --bind ...

Each route sends the service's own SQL for its scenario (bench/floor/sql.py,
checked by `python -m bench.capture_sql`), inside BEGIN/COMMIT where the
service has them; on its second address (FLOOR_BARE_PORT) the lists send
the bare SQL instead (sql.BARE: a page and its count in one statement). It decodes and signs
JWTs with python-jose under the same key and claims, and verifies passwords
with argon2 at the stored hash's cost on as many threads as the service's
PASSWORD_HASH_CONCURRENCY. It validates
nothing, maps nothing to objects and has no middleware, logging or metrics.
It knows only what the benchmark sends: it is a yardstick, not a service.

Left out on purpose: asyncpg's reset query on release (SQLAlchemy's pool
sends none either). The pool has the service's sizes, which bench/perf.py
spells out: DB_POOL_SIZE connections kept, up to DB_POOL_SIZE + DB_MAX_OVERFLOW, DB_POOL_TIMEOUT to
wait for one (then 503).

Settings come from the service's variables: DATABASE_URL, SECRET_KEY,
JWT_ISSUER, JWT_AUDIENCE, ACCESS/REFRESH_TOKEN_EXPIRE_*, DB_POOL_*.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from jose import jwt
from jose.exceptions import JOSEError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench.floor import sql

ALGORITHM = "HS256"
SECRET_KEY = os.environ.get("SECRET_KEY", "")
ISSUER = os.environ.get("JWT_ISSUER", "storefront-api")
AUDIENCE = os.environ.get("JWT_AUDIENCE", "storefront-api")
ACCESS_LIFETIME = timedelta(minutes=int(os.environ.get("ACCESS_TOKEN_EXPIRE_MINUTES", "15")))
REFRESH_LIFETIME = timedelta(days=int(os.environ.get("REFRESH_TOKEN_EXPIRE_DAYS", "14")))
POOL_SIZE = int(os.environ.get("DB_POOL_SIZE", "10"))
MAX_OVERFLOW = int(os.environ.get("DB_MAX_OVERFLOW", "5"))
POOL_TIMEOUT = float(os.environ.get("DB_POOL_TIMEOUT", "2"))
COMMAND_TIMEOUT = float(os.environ.get("DB_COMMAND_TIMEOUT", "2"))
LOGIN_WINDOW = timedelta(seconds=int(os.environ.get("LOGIN_WINDOW_SECONDS", "900")))
LOGIN_MAX_FAILURES = int(os.environ.get("LOGIN_MAX_FAILURES", "5"))
EXACT_TOTAL_LIMIT = int(os.environ.get("EXACT_TOTAL_LIMIT", "10000"))
# Requests to this port get the bare SQL (bench/perf.py binds the floor to two).
BARE_PORT = int(os.environ.get("FLOOR_BARE_PORT") or 0)
_REQUIRED = {f"require_{claim}": True for claim in ("exp", "iat", "sub", "jti", "iss", "aud")}

_hasher = PasswordHasher()
_hash_threads = ThreadPoolExecutor(
    int(os.environ.get("PASSWORD_HASH_CONCURRENCY", "4")), thread_name_prefix="password-hash"
)
_pool: asyncpg.Pool | None = None


async def _no_reset(connection: asyncpg.Connection) -> None:
    """Hands a connection back as it is (asyncpg would send a reset query)."""


@asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[None]:
    global _pool
    dsn = os.environ["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")
    _pool = await asyncpg.create_pool(
        dsn,
        min_size=POOL_SIZE,
        max_size=POOL_SIZE + MAX_OVERFLOW,
        command_timeout=COMMAND_TIMEOUT,
        reset=_no_reset,
        server_settings={"application_name": "storefront-floor", "jit": "off"},
    )
    yield
    await _pool.close()


class _Unavailable(Exception):
    pass


@asynccontextmanager
async def _connection() -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection outside any transaction: each statement on its own."""
    assert _pool is not None  # noqa: S101  (set at start-up)
    try:
        connection = await _pool.acquire(timeout=POOL_TIMEOUT)
    except TimeoutError:
        raise _Unavailable from None
    try:
        yield connection
    finally:
        await _pool.release(connection)


@asynccontextmanager
async def _transaction() -> AsyncIterator[asyncpg.Connection]:
    async with _connection() as connection, connection.transaction():
        yield connection


def _problem(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"status": status, "detail": detail}, status_code=status)


def _product(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "price": float(row["price"]),
        "tax": None if row["tax"] is None else float(row["tax"]),
        "sku": row["sku"],
        "owner_id": row["owner_id"],
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
        "version": row["version"],
    }


def _user(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "username": row["username"],
        "email": row["email"],
        "full_name": row["full_name"],
        "role": row["role"],
        "is_active": row["is_active"],
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }


def _claims(request: Request) -> dict[str, Any] | None:
    """The access token's claims, checked as the service checks them; None if it fails."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    try:
        if jwt.get_unverified_header(token).get("typ") != "at+jwt":
            return None
        claims: dict[str, Any] = jwt.decode(
            token,
            [SECRET_KEY],
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"verify_exp": True, **_REQUIRED},
        )
    except JOSEError:
        return None
    return claims if claims.get("type") == "access" else None


async def _signed_in(
    connection: asyncpg.Connection, claims: dict[str, Any], statement: str = sql.USER_ACTOR
) -> asyncpg.Record:
    user = await connection.fetchrow(statement, int(claims["sub"]))
    if user is None or user["token_version"] != claims["ver"]:
        raise _NotSignedIn
    return user


class _NotSignedIn(Exception):
    pass


async def live(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def get_product(request: Request) -> Response:
    product_id = int(request.path_params["product_id"])
    async with _connection() as connection:
        row = await connection.fetchrow(sql.PRODUCT_BY_ID, product_id)
    if row is None:
        return _problem(404, f"Product {product_id} does not exist.")
    return JSONResponse(_product(row), headers={"ETag": f'"{row["version"]}"'})


def _like_pattern(text: str) -> str:
    return "%" + text.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"


def _settle(offset: int, shown: int, more: bool, counted: int | None, estimate: int | None) -> int:
    """The service's total from its parts: known on a short last page, else the count
    (at most EXACT_TOTAL_LIMIT + 1) when under the limit, else the estimate."""
    if not more and (shown or not offset):
        return offset + shown
    seen = offset + shown + (1 if more else 0)
    if counted is not None and counted <= EXACT_TOTAL_LIMIT:
        return counted
    return max(estimate or 0, counted or 0, seen)


async def _search_total(
    connection: asyncpg.Connection, pattern: str, offset: int, shown: int, more: bool
) -> int:
    """A filtered list's total, by the service's statements: the planner's estimate,
    then a capped count when the estimate is at most EXACT_TOTAL_LIMIT."""
    if not more and (shown or not offset):
        return offset + shown
    plan = await connection.fetchval(sql.SEARCH_ESTIMATE, pattern)
    estimate = int(json.loads(plan)[0]["Plan"]["Plan Rows"])
    counted = None
    if estimate <= EXACT_TOTAL_LIMIT:
        counted = await connection.fetchval(sql.SEARCH_COUNT, pattern, EXACT_TOTAL_LIMIT + 1)
    return _settle(offset, shown, more, counted, estimate)


async def _page(
    connection: asyncpg.Connection, pattern: str | None, limit: int, offset: int, bare: bool
) -> tuple[list[asyncpg.Record], int]:
    """The page (one row more than asked, if there is one) and the total."""
    cap = EXACT_TOTAL_LIMIT + 1
    if bare:
        if pattern is None:
            rows = await connection.fetch(sql.BARE_PRODUCT_PAGE, limit + 1, offset, cap)
        else:
            rows = await connection.fetch(sql.BARE_SEARCH_PAGE, pattern, limit + 1, offset, cap)
        return rows, rows[0]["total"] if rows else 0
    if pattern is None:
        result = await connection.fetch(
            sql.PRODUCT_PAGE_WITH_TOTAL, limit + 1, offset, limit, EXACT_TOTAL_LIMIT, cap
        )
        rows = [row for row in result if row["id"] is not None]
        shown, more = min(len(rows), limit), len(rows) > limit
        counted, estimated = result[0]["counted"], result[0]["estimated"]
        return rows, _settle(offset, shown, more, counted, estimated)
    rows = await connection.fetch(sql.SEARCH_PAGE, pattern, limit + 1, offset)
    shown, more = min(len(rows), limit), len(rows) > limit
    return rows, await _search_total(connection, pattern, offset, shown, more)


def _cursor_after(product_id: int) -> str:
    raw = json.dumps(["id", None, product_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


async def list_products(request: Request) -> Response:
    params = request.query_params
    limit, offset = int(params.get("limit", 20)), int(params.get("offset", 0))
    q = params.get("q")
    pattern = _like_pattern(q) if q else None
    async with _connection() as connection:
        bare = request.scope["server"][1] == BARE_PORT
        rows, total = await _page(connection, pattern, limit, offset, bare)
    more = len(rows) > limit
    rows = rows[:limit]
    page = {
        "items": [_product(row) for row in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
    }
    headers = {}
    if more:
        following = request.url.remove_query_params("offset").include_query_params(
            cursor=_cursor_after(rows[-1]["id"])
        )
        headers["Link"] = f'<{following.path}?{following.query}>; rel="next"'
    return JSONResponse(page, headers=headers)


async def users_me(request: Request) -> Response:
    claims = _claims(request)
    if claims is None:
        return _problem(401, "The token is not valid.")
    async with _connection() as connection:
        user = await _signed_in(connection, claims, sql.USER_SIGNED_IN)
    return JSONResponse(_user(user))


async def _add_event(
    connection: asyncpg.Connection, kind: str, product: dict[str, Any], now: datetime
) -> None:
    """The change's event, in its transaction, as the service writes it (live events)."""
    data = json.dumps({"id": product["id"], "version": product["version"], "product": product})
    await connection.fetchval(
        sql.INSERT_EVENT,
        *(None, kind, product["id"], product["owner_id"], product["version"], data, now, None),
    )


def _money(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value))


async def create_product(request: Request) -> Response:
    claims = _claims(request)
    if claims is None:
        return _problem(401, "The token is not valid.")
    body = json.loads(await request.body())
    now = datetime.now(UTC)
    async with _transaction() as connection:
        user = await _signed_in(connection, claims)
        values = {
            "name": body["name"],
            "description": body.get("description"),
            "price": _money(body["price"]),
            "tax": _money(body.get("tax")),
            "sku": body.get("sku"),
            "owner_id": user["id"],
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        # RETURNING id and search_text, as the service's; the id is what is needed.
        product_id = await connection.fetchval(sql.INSERT_PRODUCT, *values.values())
        product = {
            "id": product_id,
            **values,
            "price": float(values["price"]),
            "tax": None if values["tax"] is None else float(values["tax"]),
            "created_at": now.isoformat(),
            "updated_at": now.isoformat(),
        }
        await _add_event(connection, "product.created", product, now)
    location = f"/api/v1/products/{product_id}"
    return JSONResponse(product, 201, headers={"Location": location, "ETag": '"1"'})


async def patch_product(request: Request) -> Response:
    claims = _claims(request)
    if claims is None:
        return _problem(401, "The token is not valid.")
    product_id = int(request.path_params["product_id"])
    body = json.loads(await request.body())
    expected = request.headers.get("if-match")
    async with _transaction() as connection:
        user = await _signed_in(connection, claims)
        row = await connection.fetchrow(sql.PRODUCT_BY_ID_FOR_UPDATE, product_id)
        if row is None:
            return _problem(404, f"Product {product_id} does not exist.")
        if row["owner_id"] != user["id"] and user["role"] != "admin":
            return _problem(403, "Only the product's owner or an admin may change it.")
        if expected is not None and expected.strip() not in ("*", f'"{row["version"]}"'):
            return _problem(412, "If-Match does not match the current version.")
        price, version, now = _money(body["price"]), row["version"] + 1, datetime.now(UTC)
        await connection.execute(sql.UPDATE_PRODUCT_PRICE, price, version, now, product_id)
        product = {
            **_product(row),
            "price": float(price or 0),
            "version": version,
            "updated_at": now.isoformat(),
        }
        await _add_event(connection, "product.updated", product, now)
    return JSONResponse(product, headers={"ETag": f'"{version}"'})


def _issue(kind: str, user: asyncpg.Record, family: str | None, now: datetime) -> tuple[str, str]:
    jti = uuid.uuid4().hex
    lifetime = ACCESS_LIFETIME if kind == "access" else REFRESH_LIFETIME
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(user["id"]),
        "iat": int(now.timestamp()),
        "exp": int((now + lifetime).timestamp()),
        "jti": jti,
        "type": kind,
        "ver": user["token_version"],
    }
    if family is not None:
        claims["fam"] = family
    typ = "at+jwt" if kind == "access" else "rt+jwt"
    return jwt.encode(claims, SECRET_KEY, algorithm=ALGORITHM, headers={"typ": typ}), jti


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _lock_id(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except VerificationError:
        return False


async def issue_token(request: Request) -> Response:
    form = dict(parse_qsl((await request.body()).decode()))
    name, password = form.get("username", ""), form.get("password", "")
    loop = asyncio.get_running_loop()
    async with _transaction() as connection:
        user = await connection.fetchrow(sql.USER_BY_LOGIN, name)
        if user is None:
            return _problem(400, "Incorrect username or password.")
        key = f"user:{user['id']}"
        await connection.fetchval(sql.ADVISORY_LOCK, _lock_id(key))
        now = datetime.now(UTC)
        recent = await connection.fetch(
            sql.RECENT_FAILURES, _digest(key), now - LOGIN_WINDOW, LOGIN_MAX_FAILURES
        )
        if len(recent) >= LOGIN_MAX_FAILURES:
            return _problem(429, "Too many failed password attempts for this account.")
        verified = await loop.run_in_executor(
            _hash_threads, _verify, user["password_hash"], password
        )
        if not verified:
            return _problem(400, "Incorrect username or password.")
        await connection.execute(sql.CLEAR_FAILURES, _digest(key))
        now = datetime.now(UTC)
        family = uuid.uuid4().hex
        refresh, jti = _issue("refresh", user, family, now)
        access, _ = _issue("access", user, None, now)
        await connection.execute(sql.INSERT_FAMILY, family, user["id"], now, None)
        await connection.execute(
            sql.INSERT_REFRESH_TOKEN, jti, family, now + REFRESH_LIFETIME, now, None
        )
    pair = {
        "access_token": access,
        "token_type": "bearer",
        "expires_in": int(ACCESS_LIFETIME.total_seconds()),
        "refresh_token": refresh,
    }
    return JSONResponse(pair, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


async def _unavailable(request: Request, error: Exception) -> Response:
    return _problem(503, "No database connection was free in time.")


async def _not_signed_in(request: Request, error: Exception) -> Response:
    return _problem(401, "The access token is no longer valid.")


app = Starlette(
    routes=[
        Route("/health/live", live),
        Route("/api/v1/products", list_products),
        Route("/api/v1/products", create_product, methods=["POST"]),
        Route("/api/v1/products/{product_id:int}", get_product),
        Route("/api/v1/products/{product_id:int}", patch_product, methods=["PATCH"]),
        Route("/api/v1/users/me", users_me),
        Route("/api/v1/auth/token", issue_token, methods=["POST"]),
    ],
    exception_handlers={_Unavailable: _unavailable, _NotSignedIn: _not_signed_in},
    lifespan=lifespan,
)
