"""Changing your password, POST /api/v1/users/me/password.

Covers the Users and Auth sections of API.md on password changes: the
current password is required (403 when wrong), the new one follows the
registration rules, and every access and refresh token issued before the
change stops working at once, while a token issued right after it works.
"""

import asyncio

import httpx
import pytest

from tests.support import (
    Account,
    DatabaseProbe,
    assert_problem,
    assert_unauthenticated,
    bearer,
    error_locations,
    login,
    refresh,
    tokens_for,
)
from tests.users.common import ME, stored_user

URL = "/api/v1/users/me/password"
NEW_PASSWORD = "a different long passphrase"


async def change_password(
    client: httpx.AsyncClient, account: Account, current: str, new: str = NEW_PASSWORD
) -> httpx.Response:
    return await client.post(
        URL, json={"current_password": current, "new_password": new}, headers=account.headers
    )


async def test_password_change_answers_204_and_stores_a_new_argon2id_hash(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    before = await stored_user(db, user.id)

    response = await change_password(client, user, user.password)

    assert response.status_code == 204, response.text
    assert response.content == b""
    after = await stored_user(db, user.id)
    assert after.password_hash != before.password_hash
    assert after.password_hash.startswith("$argon2id$")
    assert NEW_PASSWORD not in after.password_hash


async def test_after_a_change_only_the_new_password_signs_in(
    client: httpx.AsyncClient, user: Account
) -> None:
    assert (await change_password(client, user, user.password)).status_code == 204

    old = await login(client, user.username, user.password)
    assert assert_problem(old, 400)["error"] == "invalid_grant"
    new = await login(client, user.username, NEW_PASSWORD)
    assert new.status_code == 200, new.text
    by_email = await login(client, user.email, NEW_PASSWORD)
    assert by_email.status_code == 200, by_email.text


async def test_a_change_ends_the_old_access_and_refresh_tokens(
    client: httpx.AsyncClient, user: Account
) -> None:
    assert (await change_password(client, user, user.password)).status_code == 204

    assert_unauthenticated(await client.get(ME, headers=user.headers))
    assert_unauthenticated(await refresh(client, user.refresh_token))
    # The old access token cannot change the password again either.
    again = await change_password(client, user, NEW_PASSWORD, "yet another passphrase")
    assert_unauthenticated(again)


async def test_a_change_ends_every_other_login_of_the_user(
    client: httpx.AsyncClient, user: Account
) -> None:
    second = await tokens_for(client, user.username, user.password)
    rotated = (await refresh(client, second["refresh_token"])).json()

    assert (await change_password(client, user, user.password)).status_code == 204

    assert_unauthenticated(await client.get(ME, headers=bearer(second["access_token"])))
    assert_unauthenticated(await client.get(ME, headers=bearer(rotated["access_token"])))
    assert_unauthenticated(await refresh(client, rotated["refresh_token"]))


async def test_a_token_issued_right_after_the_change_works_at_once(
    client: httpx.AsyncClient, user: Account
) -> None:
    assert (await change_password(client, user, user.password)).status_code == 204
    fresh = await tokens_for(client, user.username, NEW_PASSWORD)

    me = await client.get(ME, headers=bearer(fresh["access_token"]))
    assert me.status_code == 200, me.text
    assert me.json()["id"] == user.id
    rotated = await refresh(client, fresh["refresh_token"])
    assert rotated.status_code == 200, rotated.text


async def test_two_changes_in_a_row_each_end_the_tokens_before_them(
    client: httpx.AsyncClient, user: Account
) -> None:
    assert (await change_password(client, user, user.password)).status_code == 204
    middle = await tokens_for(client, user.username, NEW_PASSWORD)
    middle_account = Account(
        id=user.id,
        username=user.username,
        email=user.email,
        password=NEW_PASSWORD,
        access_token=middle["access_token"],
        refresh_token=middle["refresh_token"],
    )

    third = "the third passphrase"
    assert (await change_password(client, middle_account, NEW_PASSWORD, third)).status_code == 204

    assert_unauthenticated(await client.get(ME, headers=middle_account.headers))
    assert_unauthenticated(await refresh(client, middle["refresh_token"]))
    assert (await login(client, user.username, third)).status_code == 200


async def test_wrong_current_password_gets_403_and_changes_nothing(
    client: httpx.AsyncClient, user: Account, db: DatabaseProbe
) -> None:
    before = await stored_user(db, user.id)

    response = await change_password(client, user, "not my password")

    assert_problem(response, 403, "current password")
    after = await stored_user(db, user.id)
    assert after.password_hash == before.password_hash
    assert after.token_version == before.token_version
    assert (await login(client, user.username, user.password)).status_code == 200
    assert (await client.get(ME, headers=user.headers)).status_code == 200
    assert (await refresh(client, user.refresh_token)).status_code == 200


async def test_a_403_does_not_echo_either_password(
    client: httpx.AsyncClient, user: Account
) -> None:
    response = await change_password(client, user, "guess number one", "candidate new one")
    assert_problem(response, 403)
    assert "guess number one" not in response.text
    assert "candidate new one" not in response.text


@pytest.mark.parametrize(
    ("body", "location"),
    [
        pytest.param(
            {"current_password": "correct horse battery", "new_password": "short"},
            ["body", "new_password"],
            id="new-too-short",
        ),
        pytest.param(
            {"current_password": "correct horse battery", "new_password": "n" * 129},
            ["body", "new_password"],
            id="new-too-long",
        ),
        pytest.param(
            {"current_password": "correct horse battery", "new_password": "new\u0000password"},
            ["body", "new_password"],
            id="new-with-nul",
        ),
        pytest.param(
            {"current_password": "correct horse battery"},
            ["body", "new_password"],
            id="new-missing",
        ),
        pytest.param(
            {"new_password": NEW_PASSWORD}, ["body", "current_password"], id="current-missing"
        ),
        pytest.param(
            {"current_password": "", "new_password": NEW_PASSWORD},
            ["body", "current_password"],
            id="current-empty",
        ),
        pytest.param(
            {"current_password": None, "new_password": NEW_PASSWORD},
            ["body", "current_password"],
            id="current-null",
        ),
        pytest.param(
            {
                "current_password": "correct horse battery",
                "new_password": NEW_PASSWORD,
                "password": NEW_PASSWORD,
            },
            ["body", "password"],
            id="unknown-field",
        ),
    ],
)
async def test_invalid_body_gets_422_and_changes_nothing(
    client: httpx.AsyncClient,
    user: Account,
    db: DatabaseProbe,
    body: dict[str, object],
    location: list[str],
) -> None:
    before = await stored_user(db, user.id)

    response = await client.post(URL, json=body, headers=user.headers)

    assert_problem(response, 422)
    assert error_locations(response) == [location]
    after = await stored_user(db, user.id)
    assert (after.password_hash, after.token_version) == (
        before.password_hash,
        before.token_version,
    )
    assert (await client.get(ME, headers=user.headers)).status_code == 200


async def test_new_password_at_the_limits_is_accepted(
    client: httpx.AsyncClient, user: Account
) -> None:
    eight = "8" * 8
    assert (await change_password(client, user, user.password, eight)).status_code == 204
    fresh = await tokens_for(client, user.username, eight)
    account = Account(user.id, user.username, user.email, eight, fresh["access_token"], "")
    longest = "x" * 128
    assert (await change_password(client, account, eight, longest)).status_code == 204
    assert (await login(client, user.username, longest)).status_code == 200


async def test_password_change_needs_a_token(client: httpx.AsyncClient, user: Account) -> None:
    response = await client.post(
        URL, json={"current_password": user.password, "new_password": NEW_PASSWORD}
    )
    assert_unauthenticated(response)
    assert (await login(client, user.username, user.password)).status_code == 200


async def test_no_token_and_a_bad_body_gets_401_before_422(client: httpx.AsyncClient) -> None:
    assert_unauthenticated(await client.post(URL, json={"new_password": "x"}))


async def test_a_change_leaves_other_users_tokens_alone(
    client: httpx.AsyncClient, user: Account, other_user: Account
) -> None:
    assert (await change_password(client, user, user.password)).status_code == 204

    assert (await client.get(ME, headers=other_user.headers)).status_code == 200
    assert (await refresh(client, other_user.refresh_token)).status_code == 200


@pytest.mark.concurrency
async def test_concurrent_changes_leave_exactly_one_password_that_works(
    client: httpx.AsyncClient, user: Account
) -> None:
    candidates = [f"concurrent passphrase {i}" for i in range(4)]
    responses = await asyncio.gather(
        *(change_password(client, user, user.password, new) for new in candidates)
    )
    assert all(r.status_code in (204, 401, 403) for r in responses), [r.text for r in responses]
    assert any(r.status_code == 204 for r in responses)

    working = [
        p
        for p in [user.password, *candidates]
        if (await login(client, user.username, p)).status_code == 200
    ]
    assert len(working) == 1
    assert working[0] in candidates
