"""Two separate production servers (two Gunicorn masters, two workers each) on one database,
connected to it directly and through PgBouncer in transaction mode.

A load balancer may send any request to any replica: every rule that spans
requests (login throttling, token rotation and revocation, idempotency keys,
If-Match) must hold across them, because all of its state is in the database.
"""

import concurrent.futures
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.pgbouncer import pooled_environment
from tests.server.conftest import Server, server_environment, two_servers

PASSWORD = "correct horse battery"


@pytest.fixture(params=["direct", "pgbouncer"])
def replicas(
    request: pytest.FixtureRequest, backend: str, database_url: str, tmp_path: Path
) -> Iterator[tuple[Server, Server]]:
    """Two servers on one database, connected to it directly or, as the README
    says to run them behind a transaction-mode pooler, through PgBouncer."""
    if request.param == "direct":
        environment = server_environment(database_url, tmp_path / "data")
    elif backend != "postgresql":
        pytest.skip("PgBouncer pools PostgreSQL connections")
    else:
        environment = pooled_environment(
            request.getfixturevalue("pgbouncer"), database_url, tmp_path / "data"
        )
    with two_servers(environment, tmp_path) as servers:
        yield servers


def call(server: Server, method: str, path: str, **kwargs: object) -> httpx.Response:
    headers = {"Connection": "close", **kwargs.pop("headers", {})}  # type: ignore[dict-item]
    return httpx.request(method, f"{server.base_url}{path}", headers=headers, timeout=15, **kwargs)  # type: ignore[arg-type]


def register(server: Server, name: str) -> None:
    body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    assert call(server, "POST", "/api/v1/users", json=body).status_code == 201


def tokens(server: Server, name: str) -> dict[str, str]:
    response = call(
        server, "POST", "/api/v1/auth/token", data={"username": name, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_failed_logins_on_one_replica_throttle_the_other(replicas: tuple[Server, Server]) -> None:
    first, second = replicas
    register(first, "alice")
    for attempt in range(5):
        replica = (first, second)[attempt % 2]
        failed = call(
            replica, "POST", "/api/v1/auth/token", data={"username": "alice", "password": "no"}
        )
        assert failed.status_code == 400
    for replica in (first, second):
        blocked = call(
            replica, "POST", "/api/v1/auth/token", data={"username": "alice", "password": PASSWORD}
        )
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) > 0


def test_tokens_revoked_on_one_replica_are_refused_by_the_other(
    replicas: tuple[Server, Server],
) -> None:
    first, second = replicas
    register(first, "bob")

    pair = tokens(first, "bob")
    rotated = call(
        first, "POST", "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert rotated.status_code == 200
    replayed = call(
        second, "POST", "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert replayed.status_code == 401  # retired on the first, recognised as reuse on the second
    newest = rotated.json()["refresh_token"]
    assert (
        call(first, "POST", "/api/v1/auth/refresh", json={"refresh_token": newest}).status_code
        == 401
    )

    other = tokens(second, "bob")
    assert (
        call(
            second, "POST", "/api/v1/auth/logout", json={"refresh_token": other["refresh_token"]}
        ).status_code
        == 204
    )
    assert (
        call(
            first, "POST", "/api/v1/auth/refresh", json={"refresh_token": other["refresh_token"]}
        ).status_code
        == 401
    )

    session = tokens(first, "bob")
    changed = call(
        second,
        "POST",
        "/api/v1/users/me/password",
        json={"current_password": PASSWORD, "new_password": "another long passphrase"},
        headers=bearer(session["access_token"]),
    )
    assert changed.status_code == 204
    assert (
        call(first, "GET", "/api/v1/users/me", headers=bearer(session["access_token"])).status_code
        == 401
    )


def test_an_idempotency_key_used_on_one_replica_replays_on_the_other(
    replicas: tuple[Server, Server],
) -> None:
    first, second = replicas
    register(first, "carol")
    auth = bearer(tokens(first, "carol")["access_token"])
    body = {"name": "Teapot", "price": "18.00", "sku": "TEA-1"}
    key = {"Idempotency-Key": uuid.uuid4().hex}

    created = call(first, "POST", "/api/v1/products", json=body, headers={**auth, **key})
    retried = call(second, "POST", "/api/v1/products", json=body, headers={**auth, **key})
    assert created.status_code == retried.status_code == 201
    assert retried.json() == created.json()
    assert retried.headers["location"] == created.headers["location"]
    assert retried.headers["idempotent-replayed"] == "true"
    different = call(
        second, "POST", "/api/v1/products", json={**body, "price": "1"}, headers={**auth, **key}
    )
    assert different.status_code == 422

    # Racing the same new key at both replicas: one product, whoever wins.
    race_key = {"Idempotency-Key": uuid.uuid4().hex}
    race_body = {"name": "Cup", "price": "2.00"}
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(
            pool.map(
                lambda replica: call(
                    replica,
                    "POST",
                    "/api/v1/products",
                    json=race_body,
                    headers={**auth, **race_key},
                ),
                [first, second] * 3,
            )
        )
    assert {a.status_code for a in answers} <= {201, 409}
    made = {a.json()["id"] for a in answers if a.status_code == 201}
    assert len(made) == 1
    listing = call(first, "GET", "/api/v1/products", params={"q": "Cup"}).json()
    assert listing["total"] == 1


def test_an_if_match_conflict_holds_across_replicas(replicas: tuple[Server, Server]) -> None:
    first, second = replicas
    register(first, "dave")
    auth = bearer(tokens(first, "dave")["access_token"])
    product = call(
        first, "POST", "/api/v1/products", json={"name": "Jug", "price": 5}, headers=auth
    )
    path = product.headers["location"]
    etag = product.headers["etag"]

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(
            pool.map(
                lambda pair: call(
                    pair[0],
                    "PATCH",
                    path,
                    json={"price": pair[1]},
                    headers={**auth, "If-Match": etag},
                ),
                [(first, 6), (second, 7)],
            )
        )
    assert sorted(a.status_code for a in answers) == [200, 412]
    assert call(second, "GET", path).json()["version"] == 2

    # Without If-Match, changes through both replicas all count.
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        plain = list(
            pool.map(
                lambda i: call(
                    (first, second)[i % 2], "PATCH", path, json={"price": i}, headers=auth
                ),
                range(10),
            )
        )
    assert all(a.status_code == 200 for a in plain)
    assert sorted(a.json()["version"] for a in plain) == list(range(3, 13))
    assert call(first, "GET", path).json()["version"] == 12
