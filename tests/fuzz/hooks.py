"""Schemathesis hooks for the fuzz run.

Authentication: the run may delete, deactivate, demote or rename the very
account it runs as (DELETE /users/me, PATCH /users/{id}, ...): that is the
API working. So when a token stops working (a 401), Schemathesis asks for a
new one and gets a brand-new account of the same role.

A filter keeps generated data from crossing rules that JSON Schema cannot
state, and drops nothing else:
- GET /products: "min_price above max_price gets 422" (API.md) relates two
  parameters; a schema describes each alone.
- Registration, profile changes and reset requests: `format: email` is an annotation in
  JSON Schema 2020-12; the service checks addresses with email-validator,
  which refuses special-use domains such as `.test`. Only addresses that the
  schema's own email check accepts and email-validator refuses are dropped;
  every other email, valid or not, is still sent.

A map ties a few generated values to what the service made, for the same
reason:
- GET /products: a `cursor` is valid only if this service made it (it is
  opaque; the document says so). A schema-valid cursor is replaced by one the
  service would make for the case's `sort`, and `offset`, which cannot go
  with a cursor, is dropped. Invalid cursors, sent by the negative phases,
  are left alone.
- POST /products: see map_case on Idempotency-Key.

Environment: FUZZ_BASE_URL (the server), FUZZ_ROLE ("user" or "admin") and,
for admins, DATABASE_URL (admins are made by the service's own CLI, as in
production: the API cannot make one).
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import schemathesis
from email_validator import EmailNotValidError, validate_email

from app.products.paging import CURSOR_PATTERN, Cursor

PASSWORD = "fuzzing passphrase 7f3a"  # unlike every example in the document
PROJECT_ROOT = Path(__file__).resolve().parents[2]
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7E]{1,255}")
MONEY = re.compile(r"(?:0|[1-9][0-9]{0,8})(?:\.[0-9]{1,2})?|1000000000(?:\.0{1,2})?")
CURSOR = re.compile(CURSOR_PATTERN)
# A value of each sort field, as a product could have it.
CURSOR_VALUES: dict[str, Any] = {
    "id": None,
    "name": "Espresso cup",
    "price": Decimal("12.50"),
    "created_at": datetime(2026, 1, 1, tzinfo=UTC),
}
_schema_email = jsonschema_rs.validator_for(
    {"type": "string", "format": "email"}, validate_formats=True
)


def _only_schema_calls_valid(email: object) -> bool:
    """An address JSON Schema's email format accepts but the service refuses."""
    if not isinstance(email, str) or not _schema_email.is_valid(email):
        return False
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError:
        return True
    return False


def _price(value: object) -> Decimal | None:
    """A generated price bound as the service reads it, if it is one (a number or its string)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and MONEY.fullmatch(value):
        return Decimal(value)
    return None


def _price_range_reversed(query: dict[str, Any] | None) -> bool:
    low, high = (_price((query or {}).get(bound)) for bound in ("min_price", "max_price"))
    return low is not None and high is not None and low > high


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    """Drops only the cases whose verdict a JSON Schema cannot state (see the module)."""
    operation = case.operation
    if operation.method.upper() == "GET" and operation.path == "/api/v1/products":
        return not _price_range_reversed(case.query)
    takes_email = operation.path.startswith(("/api/v1/users", "/api/v1/auth/password-reset"))
    if takes_email and isinstance(case.body, dict):
        return not _only_schema_calls_valid(case.body.get("email"))
    return True


def _cursor_made_here(sort: object) -> str:
    """A cursor as the service hands them out, for `sort` (the default if not a sort)."""
    sort = sort if isinstance(sort, str) and sort.removeprefix("-") in CURSOR_VALUES else "id"
    return Cursor(sort, CURSOR_VALUES[sort.removeprefix("-")], 1).encode()


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    """Ties generated values to what the service made (see the module).

    Cursor: a schema-valid `cursor` becomes one the service made, without `offset`.

    Idempotency-Key: tied to the body it came with.

    A key names one request: reused with another body it gets 422, a rule
    about two requests that no schema of one request can state. Suffixing
    each schema-valid key with a hash of its body keeps "same key, same
    body" (a replay, still exercised) and avoids "same key, other body".
    Keys outside the schema are left as they are, so negative cases stay so.
    """
    query = case.query
    cursor = query.get("cursor") if isinstance(query, dict) else None
    if isinstance(cursor, str) and CURSOR.fullmatch(cursor):
        query["cursor"] = _cursor_made_here(query.get("sort"))
        query.pop("offset", None)
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and IDEMPOTENCY_KEY.fullmatch(key):
        digest = hashlib.sha256(json.dumps(case.body, sort_keys=True, default=str).encode())
        case.headers["Idempotency-Key"] = f"{key[:238]}-{digest.hexdigest()[:16]}"
    return case


def _new_account(base_url: str, role: str) -> tuple[str, str]:
    name = f"fuzz-{role}-{uuid.uuid4().hex[:10]}"
    email = f"{name}@example.com"
    if role == "admin":
        command = ["create-admin", "--username", name, "--email", email, "--password", PASSWORD]
        made = subprocess.run(
            [sys.executable, "-m", "app", *command],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
        )
        if made.returncode != 0:
            raise RuntimeError(f"create-admin failed: {made.stderr[-2000:]}")
    else:
        response = httpx.post(
            f"{base_url}/api/v1/users",
            json={"username": name, "email": email, "password": PASSWORD},
            timeout=10,
        )
        response.raise_for_status()
    return name, PASSWORD


@schemathesis.auth(refresh_interval=3600)
class FreshAccount:
    def get(self, case: Any, context: Any) -> str:
        base_url = os.environ["FUZZ_BASE_URL"]
        name, password = _new_account(base_url, os.environ["FUZZ_ROLE"])
        response = httpx.post(
            f"{base_url}/api/v1/auth/token",
            data={"grant_type": "password", "username": name, "password": password},
            timeout=10,
        )
        response.raise_for_status()
        token: str = response.json()["access_token"]
        return token

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}
