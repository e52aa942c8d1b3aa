"""Throttling of failed logins at POST /api/v1/auth/token.

Covers API.md's rule that after LOGIN_MAX_FAILURES failures for one account
within LOGIN_WINDOW_SECONDS further attempts get 429 with Retry-After, even
with the right password; that failures count per submitted name, case-folded,
whether or not the user exists; that a user's username and email share one
count; and that the count lives in the database, shared by every process.
"""

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from app.auth.models import LoginFailure
from tests.auth.helpers import without_request
from tests.conftest import make_settings
from tests.support import Account, DatabaseProbe, assert_problem, client_for, login

MAX_FAILURES = 5
WINDOW = 900
WRONG = "not the password at all"


async def fail(client: httpx.AsyncClient, name: str, times: int = 1) -> None:
    for _ in range(times):
        response = await login(client, name, WRONG)
        body = assert_problem(response, 400)
        assert body["error"] == "invalid_grant"


def assert_throttled(response: httpx.Response, window: int = WINDOW) -> dict[str, object]:
    body = assert_problem(response, 429)
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit(), retry_after
    assert 0 < int(retry_after) <= window
    assert "access_token" not in body
    return body


async def failure_count(db: DatabaseProbe) -> int:
    return await db.scalar(select(func.count()).select_from(LoginFailure)) or 0


async def test_attempt_after_max_failures_gets_429_with_retry_after(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    await fail(client, "alice", MAX_FAILURES)

    response = await login(client, "alice", WRONG)

    assert_throttled(response)
    # The failures just happened: the wait is close to the whole window, not a token second.
    assert int(response.headers["retry-after"]) > WINDOW - 60
    assert await failure_count(db) == MAX_FAILURES


async def test_fewer_failures_than_the_limit_do_not_block_the_right_password(
    client: httpx.AsyncClient, user: Account
) -> None:
    await fail(client, "alice", MAX_FAILURES - 1)

    response = await login(client, "alice", user.password)

    assert response.status_code == 200, response.text


async def test_throttled_account_is_refused_even_with_the_right_password(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    await fail(client, "alice", MAX_FAILURES)

    by_name = await login(client, "alice", user.password)
    by_email = await login(client, "alice@example.com", user.password)

    assert_throttled(by_name)
    assert_throttled(by_email)
    # No refusal handed out tokens, and the failures were not cleared.
    assert await failure_count(db) == MAX_FAILURES


async def test_unknown_name_is_throttled_exactly_like_a_real_account(
    client: httpx.AsyncClient, user: Account
) -> None:
    await fail(client, "alice", MAX_FAILURES)
    await fail(client, "ghost", MAX_FAILURES)

    real = await login(client, "alice", WRONG)
    unknown = await login(client, "ghost", WRONG)

    real_body = assert_throttled(real)
    unknown_body = assert_throttled(unknown)
    assert without_request(real_body) == without_request(unknown_body)
    assert real.headers["content-type"] == unknown.headers["content-type"]


async def test_failures_are_counted_without_regard_to_case(
    client: httpx.AsyncClient, user: Account
) -> None:
    for name in ["alice", "ALICE", "Alice", "aLiCe", "ALICE@example.com"]:
        await fail(client, name)

    assert_throttled(await login(client, "alice", user.password))
    assert_throttled(await login(client, "AlIcE", user.password))


async def test_unknown_names_are_counted_case_folded(client: httpx.AsyncClient) -> None:
    for name in ["ghost", "GHOST", "Ghost", "gHoSt", "GhOsT"]:
        await fail(client, name)

    assert_throttled(await login(client, "ghost", WRONG))
    assert_throttled(await login(client, "GHOST", WRONG))


async def test_username_and_email_share_one_count(client: httpx.AsyncClient, user: Account) -> None:
    await fail(client, "alice", 3)
    await fail(client, "alice@example.com", 2)

    assert_throttled(await login(client, "alice", user.password))
    assert_throttled(await login(client, "alice@example.com", user.password))
    assert_throttled(await login(client, "ALICE@EXAMPLE.COM", user.password))


async def test_other_accounts_and_names_are_not_affected(
    client: httpx.AsyncClient, user: Account, other_user: Account
) -> None:
    await fail(client, "alice", MAX_FAILURES)
    await fail(client, "ghost", MAX_FAILURES)

    assert (await login(client, "bob", other_user.password)).status_code == 200
    assert (await login(client, "bob@example.com", other_user.password)).status_code == 200
    # A different unknown name still gets the plain invalid_grant.
    await fail(client, "phantom")


async def test_logins_work_again_once_the_window_has_passed(
    database_url: str, tmp_path: Path, user: Account
) -> None:
    window = 1
    settings = make_settings(database_url, tmp_path, login_window_seconds=window)
    async with client_for(settings) as (_, client):
        await fail(client, "alice", MAX_FAILURES)
        await fail(client, "ghost", MAX_FAILURES)
        assert_throttled(await login(client, "alice", user.password), window=window)
        assert_throttled(await login(client, "ghost", WRONG), window=window)

        await asyncio.sleep(window + 0.5)

        response = await login(client, "alice", user.password)
        assert response.status_code == 200, response.text
        await fail(client, "ghost")


async def test_retry_after_is_at_most_the_window(
    database_url: str, tmp_path: Path, user: Account
) -> None:
    window = 2
    settings = make_settings(database_url, tmp_path, login_window_seconds=window)
    async with client_for(settings) as (_, client):
        await fail(client, "alice", MAX_FAILURES)
        response = await login(client, "alice", WRONG)
        assert_throttled(response, window=window)


async def test_a_lower_limit_from_settings_is_honoured(
    database_url: str, tmp_path: Path, user: Account
) -> None:
    settings = make_settings(database_url, tmp_path, login_max_failures=2)
    async with client_for(settings) as (_, client):
        await fail(client, "alice", 2)
        assert_throttled(await login(client, "alice", user.password))


@pytest.mark.parametrize(
    "names",
    [
        pytest.param(["alice"] * 10, id="one-name"),
        pytest.param(["alice", "ALICE@example.com"] * 5, id="username-and-email"),
        pytest.param(["ghost", "GHOST"] * 5, id="unknown-name"),
    ],
)
@pytest.mark.concurrency
async def test_concurrent_wrong_attempts_let_no_more_than_the_limit_through(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe, names: list[str]
) -> None:
    responses = await asyncio.gather(*(login(client, name, WRONG) for name in names))

    statuses = [r.status_code for r in responses]
    assert statuses.count(400) == MAX_FAILURES, statuses
    assert statuses.count(429) == len(names) - MAX_FAILURES, statuses
    for response in responses:
        if response.status_code == 429:
            assert_throttled(response)
    assert await failure_count(db) == MAX_FAILURES


async def test_the_count_is_shared_between_processes(
    client: httpx.AsyncClient, database_url: str, tmp_path: Path, user: Account
) -> None:
    # A second application on the same database stands in for another worker.
    async with client_for(make_settings(database_url, tmp_path)) as (_, other_worker):
        await fail(client, "alice", 3)
        await fail(other_worker, "alice@example.com", 2)

        assert_throttled(await login(client, "alice", user.password))
        assert_throttled(await login(other_worker, "alice", user.password))


async def test_failure_records_hold_no_plain_text_name(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    await fail(client, "alice", 2)
    await fail(client, "Alice@Example.com")
    await fail(client, "ghost-Name", 2)

    keys = await db.all(select(LoginFailure.key))

    assert len(keys) == 5
    # sha256 hex digests: nothing a reader of the table could take a name from.
    assert all(re.fullmatch(r"[0-9a-f]{64}", key) for key in keys), keys
    # One key for alice (name and email alike) and one for the unknown name.
    assert len(set(keys)) == 2
