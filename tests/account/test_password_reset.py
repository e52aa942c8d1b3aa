"""Password reset (API.md 1.1, "Account: email verification and password reset").

Through a real SMTP server: a reset request answers 202 alike for every
address and mails only an active user, at most PASSWORD_RESET_MAX_PER_HOUR
times an hour per address (a count every worker and replica shares); the
link's token works once, for PASSWORD_RESET_EXPIRE_MINUTES, and is retired
by a newer request and by any password change. Confirming sets the
password, ends every session, verifies the address and clears the login
throttle. The timing of known and unknown addresses is compared against
the production command in tests/server/test_mail.py.
"""

import asyncio
from urllib.parse import urlsplit

from sqlalchemy import func, select

from app.auth.models import LoginFailure
from app.mail.models import MessageKind, MessageStatus
from tests.account.conftest import Mail, MailFactory
from tests.account.helpers import (
    CONFIRM,
    ME,
    NEW_PASSWORD,
    RESET,
    assert_unusable_token,
    expire_tokens,
)
from tests.support import (
    assert_problem,
    assert_unauthenticated,
    create_admin,
    login,
    refresh,
)


async def request_reset(mail: Mail, email: str) -> dict[str, str]:
    response = await mail.client.post(RESET, json={"email": email})
    assert response.status_code == 202, response.text
    body: dict[str, str] = response.json()
    return body


async def test_a_reset_sets_the_password_and_ends_every_session(mail: Mail) -> None:
    account = await mail.register("carol")
    for _ in range(3):
        await login(mail.client, "carol", "a wrong guess")

    await request_reset(mail, "Carol@Example.com")
    [message] = mail.inbox.wait_for(2)[1:]
    assert message.recipients == ["carol@example.com"]
    assert message.message["Subject"] == "Reset your password"
    assert urlsplit(message.link).path == "/account/reset-password"
    confirmed = await mail.client.post(
        CONFIRM, json={"token": message.token, "new_password": NEW_PASSWORD}
    )

    assert confirmed.status_code == 204
    assert_problem(await login(mail.client, "carol", account.password), 400)
    assert (await login(mail.client, "carol", NEW_PASSWORD)).status_code == 200
    assert_unauthenticated(await mail.client.get(ME, headers=account.headers))
    assert_unauthenticated(await refresh(mail.client, account.refresh_token))
    tokens = (await login(mail.client, "carol", NEW_PASSWORD)).json()
    me = await mail.client.get(ME, headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.json()["email_verified"] is True
    failures = await mail.db.scalar(select(func.count()).select_from(LoginFailure))
    assert failures == 0


async def test_every_address_gets_the_same_answer_and_only_active_users_get_mail(
    mail: Mail,
) -> None:
    await mail.register("carol")
    inactive = await mail.register("dave")
    admin = await create_admin(mail.client, mail.app, "root")
    await mail.client.patch(
        f"/api/v1/users/{inactive.id}", json={"is_active": False}, headers=admin.headers
    )

    known = await request_reset(mail, "carol@example.com")
    unknown = await request_reset(mail, "nobody@example.com")
    deactivated = await request_reset(mail, "dave@example.com")

    assert known == unknown == deactivated
    messages = mail.inbox.wait_for(3)
    await asyncio.sleep(0.2)  # anything else would have been sent by now
    assert [m.recipients for m in mail.inbox.received_messages[2:]] == [["carol@example.com"]]
    assert len(messages) == 3
    statuses = {m.address: m.status for m in await mail.outbox() if m.kind == "password_reset"}
    assert statuses == {
        "carol@example.com": MessageStatus.SENT,
        "nobody@example.com": MessageStatus.SKIPPED,
        "dave@example.com": MessageStatus.SKIPPED,
    }


async def test_a_token_works_once(mail: Mail) -> None:
    await mail.register("carol")
    await request_reset(mail, "carol@example.com")
    token = mail.inbox.wait_for(2)[1].token

    first = await mail.client.post(CONFIRM, json={"token": token, "new_password": NEW_PASSWORD})
    again = await mail.client.post(CONFIRM, json={"token": token, "new_password": "other pass"})

    assert first.status_code == 204
    assert_unusable_token(again)
    assert (await login(mail.client, "carol", NEW_PASSWORD)).status_code == 200


async def test_racing_confirmations_with_one_token_let_exactly_one_win(mail: Mail) -> None:
    await mail.register("carol")
    await request_reset(mail, "carol@example.com")
    token = mail.inbox.wait_for(2)[1].token
    passwords = [f"racing passphrase {n}" for n in range(6)]

    responses = await asyncio.gather(
        *(
            mail.client.post(CONFIRM, json={"token": token, "new_password": password})
            for password in passwords
        )
    )

    statuses = [r.status_code for r in responses]
    assert sorted(statuses) == [204] + [400] * 5
    winner = passwords[statuses.index(204)]
    for password in passwords:
        expected = 200 if password == winner else 400
        assert (await login(mail.client, "carol", password)).status_code == expected


async def test_a_newer_request_retires_the_earlier_tokens(mail: Mail) -> None:
    await mail.register("carol")
    await request_reset(mail, "carol@example.com")
    first = mail.inbox.wait_for(2)[1].token
    await request_reset(mail, "carol@example.com")
    second = mail.inbox.wait_for(3)[2].token

    assert_unusable_token(
        await mail.client.post(CONFIRM, json={"token": first, "new_password": NEW_PASSWORD})
    )
    confirmed = await mail.client.post(
        CONFIRM, json={"token": second, "new_password": NEW_PASSWORD}
    )
    assert confirmed.status_code == 204


async def test_a_password_change_retires_the_tokens(mail: Mail) -> None:
    account = await mail.register("carol")
    await request_reset(mail, "carol@example.com")
    token = mail.inbox.wait_for(2)[1].token

    changed = await mail.client.post(
        "/api/v1/users/me/password",
        json={"current_password": account.password, "new_password": "changed my mind"},
        headers=account.headers,
    )

    assert changed.status_code == 204
    assert_unusable_token(
        await mail.client.post(CONFIRM, json={"token": token, "new_password": NEW_PASSWORD})
    )
    assert (await login(mail.client, "carol", "changed my mind")).status_code == 200


async def test_a_request_made_before_a_password_change_sends_no_working_link(
    make_mail: MailFactory,
) -> None:
    """The request is recorded; by the time it is sent the password changed: nothing goes."""
    mail = await make_mail(mail_dispatcher="worker")  # nothing is sent until asked below
    sender = await make_mail()
    account = await mail.register_without_waiting("carol")
    await request_reset(mail, "carol@example.com")
    changed = await mail.client.post(
        "/api/v1/users/me/password",
        json={"current_password": account.password, "new_password": "changed my mind"},
        headers=account.headers,
    )
    assert changed.status_code == 204

    await sender.app.state.mail_dispatcher.dispatch_due()

    assert [m.message["Subject"] for m in mail.inbox.received_messages] == [
        "Welcome: please confirm your email address"
    ]
    reset = [m for m in await mail.outbox() if m.kind == MessageKind.PASSWORD_RESET]
    assert [m.status for m in reset] == [MessageStatus.SKIPPED]


async def test_expired_and_unknown_tokens_get_the_same_answer(mail: Mail) -> None:
    await mail.register("carol")
    await request_reset(mail, "carol@example.com")
    token = mail.inbox.wait_for(2)[1].token
    unknown = await mail.client.post(
        CONFIRM, json={"token": "A" * 43, "new_password": NEW_PASSWORD}
    )
    await expire_tokens(mail.app.state.database)
    expired = await mail.client.post(CONFIRM, json={"token": token, "new_password": NEW_PASSWORD})

    assert assert_unusable_token(expired) == assert_unusable_token(unknown)
    assert (await login(mail.client, "carol", "correct horse battery")).status_code == 200


async def test_a_verification_token_does_not_reset(mail: Mail) -> None:
    await mail.register("carol")
    token = mail.inbox.wait_for(1)[0].token

    response = await mail.client.post(CONFIRM, json={"token": token, "new_password": NEW_PASSWORD})

    assert_unusable_token(response)


async def test_a_new_password_follows_the_registration_rules(mail: Mail) -> None:
    await mail.register("carol")
    await request_reset(mail, "carol@example.com")
    token = mail.inbox.wait_for(2)[1].token

    for password in ("short", "x" * 129, "line\nbreak passphrase"):
        refused = await mail.client.post(CONFIRM, json={"token": token, "new_password": password})
        assert_problem(refused, 422)
        assert refused.json()["errors"][0]["loc"] == ["body", "new_password"]
    # The refused requests used nothing up.
    ok = await mail.client.post(CONFIRM, json={"token": token, "new_password": NEW_PASSWORD})
    assert ok.status_code == 204


async def test_a_malformed_request_is_a_422(mail: Mail) -> None:
    for body in ({}, {"email": "not an address"}, {"email": "a@example.com", "role": "admin"}):
        assert_problem(await mail.client.post(RESET, json=body), 422)
    for body in (
        {"token": "abc"},
        {"new_password": NEW_PASSWORD},
        {"token": "", "new_password": NEW_PASSWORD},
    ):
        assert_problem(await mail.client.post(CONFIRM, json=body), 422)


async def test_at_most_the_limit_of_messages_per_address_an_hour(mail: Mail) -> None:
    await mail.register("carol")

    answers = [await request_reset(mail, "carol@example.com") for _ in range(5)]
    unknown = [await request_reset(mail, "nobody@example.com") for _ in range(5)]

    assert all(answer == answers[0] for answer in answers + unknown)
    messages = mail.inbox.wait_for(4)
    await asyncio.sleep(0.2)
    assert len(mail.inbox.messages) == 4  # the welcome and three resets
    # Requests beyond the limit retired nothing: the third link still works.
    third = messages[3].token
    confirmed = await mail.client.post(CONFIRM, json={"token": third, "new_password": NEW_PASSWORD})
    assert confirmed.status_code == 204
    recorded = [m.address for m in await mail.outbox() if m.kind == MessageKind.PASSWORD_RESET]
    assert recorded.count("carol@example.com") == 3
    assert recorded.count("nobody@example.com") == 3


async def test_the_limit_is_shared_by_every_process_and_ignores_case(
    make_mail: MailFactory,
) -> None:
    one, two = await make_mail(), await make_mail()
    await one.register("carol")

    for mail, email in (
        (one, "carol@example.com"),
        (two, "CAROL@example.com"),
        (one, "Carol@Example.com"),
        (two, "carol@EXAMPLE.com"),
    ):
        await request_reset(mail, email)

    one.inbox.wait_for(4)
    await asyncio.sleep(0.2)
    assert len(one.inbox.messages) == 4


async def test_concurrent_requests_never_exceed_the_limit(mail: Mail) -> None:
    await mail.register("carol")

    await asyncio.gather(*(request_reset(mail, "carol@example.com") for _ in range(8)))

    mail.inbox.wait_for(2)
    await asyncio.sleep(0.3)
    recorded = [m for m in await mail.outbox() if m.kind == MessageKind.PASSWORD_RESET]
    assert len(recorded) == 3
    # The newest request supersedes the ones not yet sent: one working link.
    sent = [m for m in recorded if m.status == MessageStatus.SENT]
    assert 1 <= len(sent) <= 3
    tokens = [m.token for m in mail.inbox.received_messages[1:]]
    results = [
        (
            await mail.client.post(CONFIRM, json={"token": t, "new_password": NEW_PASSWORD})
        ).status_code
        for t in tokens
    ]
    assert results.count(204) == 1
    assert results[-1] == 204


async def test_the_reset_page_shows_the_token_and_a_form(mail: Mail) -> None:
    await mail.register("carol")
    await request_reset(mail, "carol@example.com")
    message = mail.inbox.wait_for(2)[1]
    link = urlsplit(message.link)

    page = await mail.client.get(f"{link.path}?{link.query}")

    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert message.token in page.text
    assert 'type="password"' in page.text
    assert "/api/v1/auth/password-reset/confirm" in page.text
