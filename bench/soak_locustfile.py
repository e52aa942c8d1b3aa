"""The soak's virtual users, as Locust users; bench/soak.py runs Locust on this file.

Not meant to be run on its own: soak.py seeds the accounts and products first
and names, in SOAK_LOCUST_CONFIG, a JSON file with what the users need
(`accounts`, `pool`, `throwaways`, `seed`, `words`, `colours`, `output`).

Each user has its own account, tokens and connection, and does one request
after another (no wait) through the mix below, chosen by its own seeded
random.Random. Every request is named by its kind in Locust's statistics (so
its CSV has the latencies per kind) and fails there when its status is not
one the kind expects. What Locust does not count is written to `output` when
Locust quits: the statuses and transport errors per kind, the unexpected
statuses, the changes made to each shared product (the lost-update check's
bookkeeping) and this process's CPU time.

Locust runs on gevent, which it patches into the standard library (time.sleep,
sockets) when imported: nothing here may use asyncio.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import locust.stats
from locust import FastHttpUser, constant, events, task
from locust.contrib.fasthttp import LocustBadStatusCode, ResponseContextManager
from locust.env import Environment

CONFIG_VARIABLE = "SOAK_LOCUST_CONFIG"
API = "/api/v1"
REQUEST_TIMEOUT = 30.0
RENEW_MARGIN = 60.0  # refresh an access token this many seconds before it expires
# About one request in this many asks for `Connection: close`: clients come and
# go, and new connections spread the load over the workers (a connection kept
# for the whole run stays with the worker that accepted it, often all on one).
RECONNECT_EVERY = 50
KEEP_OWN = 10  # a user deletes one of its own products only when it has more
SORTS = ("id", "-id", "name", "-name", "price", "-price", "created_at", "-created_at")

# The kinds of request, in the report's order, with the statuses each may get.
EXPECTED: dict[str, tuple[int, ...]] = {
    "list": (200,),
    "get": (200,),
    "get_if_none_match": (200, 304),
    "me": (200,),
    "create": (201,),
    "patch_pool": (200,),
    "if_match_write": (200, 412),
    "delete": (204,),
    "login": (200,),
    "refresh": (200,),
    "invalid_body": (422,),
    "unknown_id": (404,),
    "no_token": (401,),
    "wrong_password": (400, 429),
}
# Locust keeps one statistics entry per name and method; these kinds use two
# methods and are kept as one entry each, under this "method".
MIXED_METHODS = {"if_match_write": "PUT|PATCH", "no_token": "GET|POST"}


def _to_the_millisecond(response_time: float) -> int:
    """Locust's histogram keeps two significant digits by default (115 ms counts
    as 120); the soak keeps whole milliseconds below a second and three digits
    above, close to the exact percentiles it computed before it ran on Locust."""
    if response_time < 1000:
        return round(response_time)
    return int(round(response_time, 2 - math.floor(math.log10(response_time))))


locust.stats.bucket_response_time = _to_the_millisecond


# --- What soak.py passes, and what it gets back ---------------------------------


@dataclass
class Account:
    username: str
    password: str
    id: int
    access_token: str = ""
    refresh_token: str = ""
    renew_at: float = 0.0  # time.time() after which the access token is refreshed

    @classmethod
    def seeded(cls, entry: dict[str, Any]) -> Account:
        """The account as soak.py seeded it, with the token pair it got at `tokens_at`."""
        account = cls(entry["username"], entry["password"], entry["id"])
        account.take(entry["tokens"], entry["tokens_at"])
        return account

    def take(self, pair: dict[str, Any], at: float | None = None) -> None:
        self.access_token = pair["access_token"]
        self.refresh_token = pair["refresh_token"]
        since = time.time() if at is None else at
        self.renew_at = since + max(1.0, float(pair["expires_in"]) - RENEW_MARGIN)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@dataclass(frozen=True)
class PoolProduct:
    """A product every user changes; soak.py checks its final version."""

    id: int
    sku: str


@dataclass
class Run:
    accounts: list[dict[str, Any]]
    pool: list[PoolProduct]
    throwaways: list[str]
    seed: int
    words: tuple[str, ...]
    colours: tuple[str, ...]
    output: Path
    started_at: float = 0.0
    stopped_at: float = 0.0
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    unexpected: dict[str, Counter[int]] = field(default_factory=dict)
    transport_errors: dict[str, Counter[str]] = field(default_factory=dict)
    changes: Counter[int] = field(default_factory=Counter)  # PUT/PATCH answered 200
    uncertain: Counter[int] = field(default_factory=Counter)  # PUT/PATCH with no answer
    # A few of the requests worth looking up in the server log by request id.
    examples: list[str] = field(default_factory=list)

    @classmethod
    def from_environment(cls) -> Run:
        path = os.environ.get(CONFIG_VARIABLE)
        if not path:
            raise RuntimeError(f"{CONFIG_VARIABLE} is not set: bench/soak.py runs this file")
        config = json.loads(Path(path).read_text())
        return cls(
            accounts=config["accounts"],
            pool=[PoolProduct(p["id"], p["sku"]) for p in config["pool"]],
            throwaways=config["throwaways"],
            seed=int(config["seed"]),
            words=tuple(config["words"]),
            colours=tuple(config["colours"]),
            output=Path(config["output"]),
        )

    def record(self, kind: str, request: str, status: int) -> bool:
        """Counts an answer; whether its status is one the kind expects."""
        self.statuses.setdefault(kind, Counter())[status] += 1
        if status in EXPECTED[kind]:
            return True
        self.unexpected.setdefault(kind, Counter())[status] += 1
        self._example(f"{status} {request}")
        return False

    def transport_error(self, kind: str, request: str, error: BaseException) -> None:
        name = type(error).__name__
        self.transport_errors.setdefault(kind, Counter())[name] += 1
        self._example(f"{name} {request}: {error}")

    def _example(self, line: str) -> None:
        if len(self.examples) < 20:
            self.examples.append(line)

    def results(self, environment: Environment) -> dict[str, Any]:
        def by_kind(counters: dict[str, Counter[Any]]) -> dict[str, dict[str, int]]:
            return {
                kind: {str(key): n for key, n in sorted(counters[kind].items())}
                for kind in EXPECTED
                if kind in counters
            }

        errors = environment.runner.exceptions.values() if environment.runner else []
        return {
            "kinds": list(EXPECTED),
            "started_at": self.started_at,
            "stopped_at": self.stopped_at,
            "cpu_s": round(time.process_time(), 2),
            "statuses": by_kind(self.statuses),
            "unexpected": by_kind(self.unexpected),
            "transport_errors": by_kind(self.transport_errors),
            "pool": {
                str(p.id): {"changes": self.changes[p.id], "uncertain": self.uncertain[p.id]}
                for p in self.pool
            },
            "examples": self.examples,
            "errors": [f"{e['msg']} (x{e['count']})\n{e['traceback']}" for e in errors],
        }


RUN: Run | None = None


def _load(**_: Any) -> None:
    global RUN
    RUN = Run.from_environment()
    # Locust sets its --run-time timer on gevent's clock, which until the loop
    # first runs still reads the time before Locust's imports: the run would
    # end early by as long as they took (2-3 s here). One yield updates it.
    time.sleep(0)


def _run() -> Run:
    if RUN is None:
        raise RuntimeError("the soak's configuration was not loaded")
    return RUN


def _started(**_: Any) -> None:
    _run().started_at = time.time()


def _stopped(**_: Any) -> None:
    _run().stopped_at = time.time()


def _write(environment: Environment, **_: Any) -> None:
    run = _run()
    # Locust rewrites its CSV files every CSV_STATS_INTERVAL_SEC: one more
    # round, so that they hold the requests the users finished while stopping.
    time.sleep(locust.stats.CSV_STATS_INTERVAL_SEC + 0.5)
    results = run.results(environment)
    run.output.write_text(json.dumps(results, indent=2) + "\n")
    if results["errors"]:  # the users' code failed, not the server: the soak could not run
        environment.process_exit_code = 3


for hook, listener in (
    (events.init, _load),
    (events.test_start, _started),
    (events.test_stop, _stopped),
    (events.quitting, _write),
):
    hook.add_listener(listener)  # type: ignore[no-untyped-call]  # Locust's EventHook is untyped


def _etag(response: ResponseContextManager) -> str:
    return str(response.headers["ETag"]) if response.headers else ""


# --- The users --------------------------------------------------------------------


class SoakUser(FastHttpUser):
    """One soak client: its own account, tokens and connection, one request at a time."""

    wait_time = constant(0)
    network_timeout = REQUEST_TIMEOUT
    connection_timeout = REQUEST_TIMEOUT
    concurrency = 1  # one connection, as one client has
    _numbers = itertools.count()

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.soak = _run()
        self.number = next(SoakUser._numbers)
        self.account = Account.seeded(self.soak.accounts[self.number])
        self.pool = self.soak.pool
        # A reproducible mix, not secrets.
        self.rng = random.Random(self.soak.seed * 1000 + self.number)  # noqa: S311
        self.own: list[int] = []  # products this user created and has not deleted
        self.etags: dict[int, str] = {}
        self.sent = 0
        # The mix: (what, weight). Weights are percentages of iterations; the
        # conditional write also reads the product first.
        mix: list[tuple[Callable[[], None], int]] = [
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
        self.actions = [action for action, _ in mix]
        self.weights = [weight for _, weight in mix]

    @task
    def step(self) -> None:
        self.rng.choices(self.actions, self.weights)[0]()

    def call(
        self,
        kind: str,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        **options: Any,
    ) -> ResponseContextManager | None:
        """One request, in Locust's statistics as `kind`; None when no answer came."""
        self.sent += 1
        request_id = f"soak-{self.number}-{self.sent}"
        sent_headers = {"X-Request-ID": request_id, **(headers or {})}
        if self.rng.randrange(RECONNECT_EVERY) == 0:
            sent_headers["Connection"] = "close"
        described = f"{method} {path} [{request_id}]"
        with self.client.request(
            method, path, name=kind, headers=sent_headers, catch_response=True, **options
        ) as response:
            response.request_meta["request_type"] = MIXED_METHODS.get(kind, method)
            error = response.request_meta["exception"]
            # A status Locust calls an error is still an answer; anything else is not.
            if response.status_code == 0 or (
                error is not None and not isinstance(error, LocustBadStatusCode)
            ):
                self.soak.transport_error(kind, described, error)
                response.failure(error)
                answered = False
            else:
                if self.soak.record(kind, described, response.status_code):
                    response.success()
                else:
                    response.failure(f"unexpected status {response.status_code}")
                answered = True
        if not answered:
            time.sleep(0.1)  # no busy loop against a dead server (gevent's sleep)
            return None
        answer: ResponseContextManager = response
        return answer

    def auth(self) -> dict[str, str]:
        """The access token's header, refreshing the token when it is about to expire."""
        if time.time() >= self.account.renew_at:
            self.refresh()
        return self.account.headers

    # Reads

    def list_products(self) -> None:
        params: dict[str, str | int] = {
            "sort": self.rng.choice(SORTS),
            "limit": self.rng.choice((5, 10, 20, 50, 100)),
            "offset": self.rng.choice((0, 0, 0, 10, 50, 500)),
        }
        if self.rng.random() < 0.3:
            params["q"] = self.rng.choice((*self.soak.words, *self.soak.colours, "pool", "zz%_"))
        if self.rng.random() < 0.3:
            low = self.rng.randrange(0, 500)
            params.update(min_price=low, max_price=low + self.rng.randrange(0, 500))
        if self.rng.random() < 0.2:
            params["owner_id"] = self.account.id
        self.call("list", "GET", f"{API}/products", params=params)

    def get_product(self) -> None:
        self._get(self._some_product())

    def _get(self, product_id: int) -> ResponseContextManager | None:
        response = self.call("get", "GET", f"{API}/products/{product_id}")
        if response is not None and response.status_code == 200:
            self.etags[product_id] = _etag(response)
        return response

    def get_if_none_match(self) -> None:
        product_id = self._some_product()
        etag = self.etags.get(product_id)
        if etag is None:
            self._get(product_id)
            return
        response = self.call(
            "get_if_none_match",
            "GET",
            f"{API}/products/{product_id}",
            headers={"If-None-Match": etag},
        )
        if response is not None and response.status_code == 200:
            self.etags[product_id] = _etag(response)

    def read_me(self) -> None:
        self.call("me", "GET", f"{API}/users/me", headers=self.auth())

    def _some_product(self) -> int:
        if self.own and self.rng.random() < 0.5:
            return self.rng.choice(self.own)
        return self.rng.choice(self.pool).id

    # Writes

    def _product_body(self) -> dict[str, Any]:
        word, colour = self.rng.choice(self.soak.words), self.rng.choice(self.soak.colours)
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

    def create_product(self) -> None:
        response = self.call(
            "create", "POST", f"{API}/products", json=self._product_body(), headers=self.auth()
        )
        if response is not None and response.status_code == 201:
            product = response.json()
            self.own.append(product["id"])
            self.etags[product["id"]] = _etag(response)

    def patch_pool(self) -> None:
        """PATCH without If-Match: every one must apply, none may be lost."""
        product = self.rng.choice(self.pool)
        change: dict[str, Any] = {"description": self._note()}
        if self.rng.random() < 0.5:
            change["price"] = self.rng.randrange(1, 100_000) / 100
        if self.rng.random() < 0.2:
            change["tax"] = None
        self._change(product, "patch_pool", "PATCH", change, {})

    def _note(self) -> str:
        """A description no other change writes: every change really changes the product."""
        return f"changed by soak user {self.number}, request {self.sent + 1}"

    def write_if_match(self) -> None:
        """Reads a shared product, then PUTs or PATCHes it with If-Match: 200, or 412 if beaten."""
        product = self.rng.choice(self.pool)
        read = self._get(product.id)
        if read is None or read.status_code != 200:
            return
        method = self.rng.choice(("PUT", "PATCH"))
        if method == "PUT":
            body = {**self._product_body(), "sku": product.sku, "description": self._note()}
        else:
            body = {"price": self.rng.randrange(1, 100_000) / 100, "description": self._note()}
        headers = {"If-Match": _etag(read)}
        self._change(product, "if_match_write", method, body, headers)

    def _change(
        self,
        product: PoolProduct,
        kind: str,
        method: str,
        body: dict[str, Any],
        headers: dict[str, str],
    ) -> None:
        response = self.call(
            kind,
            method,
            f"{API}/products/{product.id}",
            json=body,
            headers={**headers, **self.auth()},
        )
        if response is None:
            self.soak.uncertain[product.id] += 1
        elif response.status_code == 200:
            self.soak.changes[product.id] += 1
            self.etags[product.id] = _etag(response)

    def delete_own(self) -> None:
        if len(self.own) <= KEEP_OWN:
            self.create_product()
            return
        product_id = self.own.pop(self.rng.randrange(len(self.own)))
        headers = self.auth()
        if product_id in self.etags and self.rng.random() < 0.5:
            headers["If-Match"] = self.etags[product_id]
        # Nobody else changes a user's own products, so the ETag it saw is current.
        self.call("delete", "DELETE", f"{API}/products/{product_id}", headers=headers)
        self.etags.pop(product_id, None)

    # Tokens

    def login(self) -> None:
        form = {"username": self.account.username, "password": self.account.password}
        response = self.call("login", "POST", f"{API}/auth/token", data=form)
        if response is not None and response.status_code == 200:
            self.account.take(response.json())

    def refresh(self) -> None:
        """Rotates the pair; the next request uses the new access token."""
        body = {"refresh_token": self.account.refresh_token}
        response = self.call("refresh", "POST", f"{API}/auth/refresh", json=body)
        if response is not None and response.status_code == 200:
            self.account.take(response.json())
        elif response is not None:  # unexpected, recorded; carry on with a fresh login
            self.login()

    # Bad requests

    def invalid_body(self) -> None:
        body = self.rng.choice(({"name": "", "price": "12.345"}, {"price": -1}, {"owner_id": 1}))
        self.call("invalid_body", "POST", f"{API}/products", json=body, headers=self.auth())

    def unknown_id(self) -> None:
        self.call("unknown_id", "GET", f"{API}/products/{10**12 + self.sent}")

    def no_token(self) -> None:
        path, body = self.rng.choice(
            ((f"{API}/products", self._product_body()), (f"{API}/users/me", None))
        )
        method = "POST" if body is not None else "GET"
        self.call("no_token", method, path, json=body)

    def wrong_password(self) -> None:
        form = {"username": self.rng.choice(self.soak.throwaways), "password": "not-the-password"}
        self.call("wrong_password", "POST", f"{API}/auth/token", data=form)
