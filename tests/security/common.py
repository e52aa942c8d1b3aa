"""Shared by the OWASP API Top 10 modules: the declared operations, API.md's field lists, rows."""

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import inspect, select
from sqlalchemy.orm import undefer

from app.auth.models import LoginFailure, RefreshFamily, RefreshToken
from app.core.models import Base
from app.products.models import Product
from app.users.models import User
from tests.support import Account, DatabaseProbe

API_PREFIX = "/api/v1"
APP_ROOT = Path(__file__).resolve().parents[2] / "app"
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")

# The response fields API.md lists, and nothing else.
USER_FIELDS = frozenset(
    {
        "id",
        "username",
        "email",
        "full_name",
        "role",
        "is_active",
        "email_verified",
        "created_at",
        "updated_at",
    }
)
PRODUCT_FIELDS = frozenset(
    {
        "id",
        "name",
        "description",
        "price",
        "tax",
        "sku",
        "owner_id",
        "created_at",
        "updated_at",
        "version",
    }
)
PAGE_FIELDS = frozenset({"items", "total", "limit", "offset"})
TOKEN_PAIR_FIELDS = frozenset({"access_token", "token_type", "expires_in", "refresh_token"})

# Fields a client must never be able to set where API.md does not list them.
SERVER_OWNED_FIELDS = (
    "role",
    "is_active",
    "email_verified",
    "id",
    "owner_id",
    "version",
    "created_at",
    "updated_at",
    "password_hash",
    "token_version",
)

_PATH_PARAMETER = re.compile(r"\{[^}]+\}")


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    spec: dict[str, Any]

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.path

    @property
    def path_parameters(self) -> list[str]:
        return [p["name"] for p in self.spec.get("parameters", []) if p["in"] == "path"]

    @property
    def needs_token(self) -> bool:
        return bool(self.spec.get("security"))

    @property
    def streams(self) -> bool:
        """An event stream: a valid request is answered with a body that never ends."""
        return "text/event-stream" in self.spec["responses"].get("200", {}).get("content", {})

    def url(self, ident: int | str = 1) -> str:
        """The path with every `{...}` parameter set to `ident`.

        An event stream's URL also carries an invalid `owner_id`, refused at
        once (422): a sweep over every operation cannot wait on an endless body.
        """
        path = _PATH_PARAMETER.sub(str(ident), self.path)
        return f"{path}?owner_id=0" if self.streams else path


def operations(app: FastAPI) -> list[Operation]:
    """Every operation `app.openapi()` declares, in document order."""
    document = app.openapi()
    return [
        Operation(method.upper(), path, spec)
        for path, item in document["paths"].items()
        for method, spec in item.items()
        if method in HTTP_METHODS
    ]


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def schema_name(schema: dict[str, Any]) -> str:
    return str(schema.get("$ref", "")).rsplit("/", 1)[-1]


def walk_schemas(document: dict[str, Any], schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """`schema` and every schema nested in it, following references (each once)."""
    seen: set[str] = set()
    pending = [schema]
    while pending:
        current = pending.pop()
        if "$ref" in current:
            name = schema_name(current)
            if name in seen:
                continue
            seen.add(name)
            current = resolve(document, current)
        yield current
        pending.extend(current.get("properties", {}).values())
        for key in ("items", "additionalProperties"):
            if isinstance(current.get(key), dict):
                pending.append(current[key])
        for key in ("anyOf", "oneOf", "allOf"):
            pending.extend(current.get(key, []))


async def create_product(
    client: httpx.AsyncClient, owner: Account, **fields: Any
) -> dict[str, Any]:
    body = {"name": "Espresso cup", "price": "12.50", **fields}
    response = await client.post(f"{API_PREFIX}/products", json=body, headers=owner.headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def columns(row: object) -> dict[str, Any]:
    """Every mapped column of a loaded row, by attribute name."""
    mapper = inspect(type(row))
    return {attribute.key: getattr(row, attribute.key) for attribute in mapper.column_attrs}


def stored_models() -> list[type[Any]]:
    """Every mapped model of the application (the app imports them all when it is built)."""
    models = [mapper.class_ for mapper in Base.registry.mappers]
    assert {User, Product, RefreshFamily, RefreshToken, LoginFailure} <= set(models)
    return sorted(models, key=lambda model: str(model.__tablename__))


async def snapshot(db: DatabaseProbe) -> dict[str, list[dict[str, Any]]]:
    """Everything the service stores, row by row, to show that a refused request changed nothing."""
    tables: dict[str, list[dict[str, Any]]] = {}
    for model in stored_models():
        # Deferred columns too (products.search_text): read now, not after the session.
        statement = select(model).options(undefer("*")).order_by(*inspect(model).primary_key)
        rows = await db.all(statement)
        tables[model.__tablename__] = [columns(row) for row in rows]
    return tables


# Modules that open network connections, and calls that do.
NETWORK_MODULES = {
    "aiohttp",
    "aiosmtplib",
    "asyncio.streams",
    "ftplib",
    "http.client",
    "httpx",
    "imaplib",
    "poplib",
    "requests",
    "smtplib",
    "socket",
    "ssl",
    "telnetlib",
    "urllib.request",
    "urllib3",
    "websockets",
    "xmlrpc.client",
}
# What the application itself uses: aiosmtplib, with ssl for STARTTLS, for the mail outbox.
SMTP_ONLY = {("app/mail/transport.py", "aiosmtplib"), ("app/mail/transport.py", "ssl")}
CONNECTING_CALLS = {"open_connection", "create_connection", "urlopen", "getaddrinfo"}


def imported_modules(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def called_names(tree: ast.AST) -> set[str]:
    """The names of everything called: `f` of `f(...)` and of `x.f(...)`."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name):
                names.add(node.func.id)
            elif isinstance(node.func, ast.Attribute):
                names.add(node.func.attr)
    return names


def network_use(root: Path) -> set[tuple[str, str]]:
    """(file, module or call) for every network client imported or called under `root`."""
    found = set()
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        where = str(path.relative_to(root.parent))
        found |= {
            (where, module)
            for module in imported_modules(tree)
            if module in NETWORK_MODULES or module.split(".")[0] in NETWORK_MODULES
        }
        found |= {(where, call) for call in called_names(tree) & CONNECTING_CALLS}
    return found
