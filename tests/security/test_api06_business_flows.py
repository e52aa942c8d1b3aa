"""OWASP API6:2023 Unrestricted Access to Sensitive Business Flows, applied to this service.

This service sells nothing, so its sensitive flows are the account flows:
signing in (credential stuffing and password guessing), keeping a session
alive with refresh tokens (a stolen refresh token replayed for weeks),
signing up (bulk account creation, and the welcome mail as a way to send
mail to strangers), and changing a password.

Defences shown here: failed logins are counted per account in the
database, so every worker and replica enforces one limit; the count ignores
case, joins a user's username and email, and applies to names nobody has,
with the same answer; it lifts when the window passes. A refresh token
works once; a replayed one revokes its whole login, and two concurrent
uses of one token cannot both win. Usernames and emails are unique without
regard to case, so each address gets at most one welcome mail. Password
reset, which mails whoever owns an address, is limited per address
(tests/account/test_password_reset.py).

Wrong current passwords on the password-change route count against the
same per-account throttle, so a stolen access token cannot guess the
password there faster than anyone can at sign-in.

Registration is not throttled by the service: API.md asks for open
registration, and the client's address (the only thing a per-client limit
could key on) is known reliably only to the reverse proxy in front of it.
That limit belongs there; the README's security section says so.
"""

import asyncio
import logging
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from app.auth.models import RefreshFamily
from app.mail.models import OutboxMessage
from app.users.models import User
from tests.auth.helpers import claims_of
from tests.conftest import make_settings
from tests.support import (
    Account,
    DatabaseProbe,
    assert_problem,
    client_for,
    login,
    refresh,
    register,
    tokens_for,
)

MAX_FAILURES = 5  # LOGIN_MAX_FAILURES in the test settings


def comparable(response: httpx.Response) -> dict[str, object]:
    """A problem body without what differs on every request."""
    body = response.json()
    return {k: v for k, v in body.items() if k not in ("request_id", "instance")}


async def test_failed_logins_count_across_replicas(
    client: httpx.AsyncClient, user: Account, database_url: str, tmp_path: Path
) -> None:
    """Two application instances on one database, as two workers or replicas are."""
    settings = make_settings(database_url, tmp_path / "replica")
    async with client_for(settings) as (_, replica):
        for index in range(MAX_FAILURES):
            instance = client if index % 2 else replica
            assert_problem(await login(instance, user.username, "a guess"), 400)

        for instance in (client, replica):
            locked = await login(instance, user.username, user.password)
            assert_problem(locked, 429)
            assert int(locked.headers["retry-after"]) > 0


async def test_case_and_email_do_not_give_extra_attempts(
    client: httpx.AsyncClient, user: Account
) -> None:
    names = [user.username.upper(), user.email, user.email.upper(), user.username.title(), "alice"]
    for name in names[:MAX_FAILURES]:
        assert_problem(await login(client, name, "a guess"), 400)

    for name in names:
        assert_problem(await login(client, name, user.password), 429)


async def test_a_name_nobody_has_is_throttled_with_the_same_answer(
    client: httpx.AsyncClient, user: Account
) -> None:
    for _ in range(MAX_FAILURES):
        assert_problem(await login(client, user.username, "a guess"), 400)
        assert_problem(await login(client, "nobody", "a guess"), 400)

    real = await login(client, user.username, "a guess")
    unknown = await login(client, "nobody", "a guess")

    assert_problem(real, 429)
    assert_problem(unknown, 429)
    assert comparable(real) == comparable(unknown)


async def test_the_lock_lifts_when_the_window_has_passed(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(
        database_url,
        tmp_path / "window",
        login_max_failures=2,
        login_window_seconds=1,
    )
    async with client_for(settings) as (_, client):
        assert (await register(client, "carol", "correct horse battery")).status_code == 201
        for _ in range(2):
            assert_problem(await login(client, "carol", "a guess"), 400)
        locked = await login(client, "carol", "correct horse battery")
        assert_problem(locked, 429)
        assert int(locked.headers["retry-after"]) == 1

        await asyncio.sleep(1.1)

        assert (await login(client, "carol", "correct horse battery")).status_code == 200


async def test_a_replayed_refresh_token_revokes_its_login_and_only_that_one(
    client: httpx.AsyncClient, db: DatabaseProbe, user: Account
) -> None:
    other_login = await tokens_for(client, user.username, user.password)
    rotated = await refresh(client, user.refresh_token)
    assert rotated.status_code == 200

    replayed = await refresh(client, user.refresh_token)

    assert_problem(replayed, 401)
    assert_problem(await refresh(client, rotated.json()["refresh_token"]), 401)
    family = await db.get(RefreshFamily, claims_of(user.refresh_token)["fam"])
    assert family is not None
    assert family.revoked_at is not None
    # The user's other login (another device) goes on.
    assert (await refresh(client, other_login["refresh_token"])).status_code == 200


@pytest.mark.concurrency
async def test_two_concurrent_uses_of_one_refresh_token_cannot_both_win(
    client: httpx.AsyncClient, user: Account
) -> None:
    first, second = await asyncio.gather(
        refresh(client, user.refresh_token), refresh(client, user.refresh_token)
    )

    assert sorted([first.status_code, second.status_code]) == [200, 401]
    winner = first if first.status_code == 200 else second
    # The loser was a replay: the winner's new token went down with the login.
    assert_problem(await refresh(client, winner.json()["refresh_token"]), 401)


async def test_each_address_gets_at_most_one_account_and_one_welcome(
    client: httpx.AsyncClient, db: DatabaseProbe, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.mail")
    first = await client.post(
        "/api/v1/users",
        json={"username": "carol", "email": "carol@example.com", "password": "long enough!"},
    )
    assert first.status_code == 201

    for username, email in (
        ("carol2", "CAROL@example.com"),
        ("carol3", "Carol@Example.COM"),
        ("CAROL", "other@example.com"),
    ):
        again = await client.post(
            "/api/v1/users",
            json={"username": username, "email": email, "password": "long enough!"},
        )
        assert_problem(again, 409)

    assert await db.scalar(select(func.count()).select_from(User)) == 1
    welcomes = [r for r in caplog.records if r.name == "app.mail" and "Welcome" in r.getMessage()]
    assert len(welcomes) == 1
    assert await db.scalar(select(func.count()).select_from(OutboxMessage)) == 1


async def test_wrong_current_passwords_are_throttled_like_logins(
    client: httpx.AsyncClient, user: Account
) -> None:
    for _ in range(MAX_FAILURES):
        wrong = await client.post(
            "/api/v1/users/me/password",
            json={"current_password": "a guess", "new_password": "a new passphrase"},
            headers=user.headers,
        )
        assert_problem(wrong, 403)

    right = await client.post(
        "/api/v1/users/me/password",
        json={"current_password": user.password, "new_password": "a new passphrase"},
        headers=user.headers,
    )
    assert_problem(right, 429)
    assert int(right.headers["retry-after"]) > 0
    # One count for the account: signing in is throttled too, even with the right password.
    assert_problem(await login(client, user.username, user.password), 429)


async def test_a_right_current_password_clears_the_count(
    client: httpx.AsyncClient, user: Account
) -> None:
    for _ in range(MAX_FAILURES - 1):
        wrong = await client.post(
            "/api/v1/users/me/password",
            json={"current_password": "a guess", "new_password": "a new passphrase"},
            headers=user.headers,
        )
        assert_problem(wrong, 403)
    changed = await client.post(
        "/api/v1/users/me/password",
        json={"current_password": user.password, "new_password": "a new passphrase"},
        headers=user.headers,
    )
    assert changed.status_code == 204
    # Four failures were forgotten: one more wrong attempt at sign-in is a 400, not a 429.
    wrong_login = await login(client, user.username, "not it at all")
    assert_problem(wrong_login, 400)
