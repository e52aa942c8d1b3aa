"""Email verification (API.md 1.1, "Account: email verification and password reset").

Through a real SMTP server: the welcome after registration carries a link
with a one-time token, read out of the received message as a person would;
the token verifies that address once, for EMAIL_VERIFICATION_EXPIRE_HOURS,
and only while the account still has the address. A new address is
unverified and gets its own message; a signed-in user may ask for another.
"""

import asyncio
from urllib.parse import quote, urlsplit

import httpx
from sqlalchemy import select

from app.account.models import AccountToken, TokenPurpose
from app.mail.models import MessageKind, MessageStatus
from app.users.models import User
from tests.account.conftest import PUBLIC_URL, Mail, MailFactory
from tests.account.helpers import ME, RESEND, VERIFY, assert_unusable_token, expire_tokens
from tests.support import assert_problem, assert_unauthenticated, bearer, register


async def test_a_new_user_is_unverified_until_the_welcome_link_is_followed(mail: Mail) -> None:
    response = await register(mail.client, "carol")
    assert response.status_code == 201
    assert response.json()["email_verified"] is False

    [welcome] = mail.inbox.wait_for(1)
    assert welcome.recipients == ["carol@example.com"]
    assert welcome.message["Subject"].startswith("Welcome")
    assert welcome.message["Message-ID"]
    link = urlsplit(welcome.link)
    assert f"{link.scheme}://{link.netloc}" == PUBLIC_URL
    assert link.path == "/account/verify-email"
    token = welcome.token
    assert len(token) >= 22  # at least 128 bits, URL-safe base64

    assert (await mail.client.post(VERIFY, json={"token": token})).status_code == 204

    account = await mail.client.post(
        "/api/v1/auth/token", data={"username": "carol", "password": "correct horse battery"}
    )
    me = await mail.client.get(ME, headers=bearer(account.json()["access_token"]))
    assert me.json()["email_verified"] is True
    stored = await mail.db.scalar(select(User).where(User.username == "carol"))
    assert stored is not None
    assert stored.email_verified is True


async def test_the_token_is_stored_only_as_a_hash(mail: Mail) -> None:
    await mail.register("carol")
    token = mail.last_to("carol@example.com").token

    rows = await mail.db.all(select(AccountToken))
    assert len(rows) == 1
    stored = rows[0]
    assert stored.purpose == TokenPurpose.VERIFY_EMAIL
    assert stored.address == "carol@example.com"
    for value in vars(stored).values():
        assert token not in str(value)
    assert len(stored.token_hash) == 64
    # Nor is it anywhere in the outbox.
    [message] = await mail.outbox()
    assert message.status == MessageStatus.SENT
    for value in vars(message).values():
        assert token not in str(value)


async def test_a_token_works_once_and_every_unusable_token_gets_the_same_answer(
    mail: Mail,
) -> None:
    await mail.register("carol")
    await mail.register("dave")
    carol_token = mail.last_to("carol@example.com").token
    dave_token = mail.last_to("dave@example.com").token
    assert (await mail.client.post(VERIFY, json={"token": carol_token})).status_code == 204

    used = assert_unusable_token(await mail.client.post(VERIFY, json={"token": carol_token}))
    unknown = assert_unusable_token(await mail.client.post(VERIFY, json={"token": "x" * 43}))
    garbage = assert_unusable_token(await mail.client.post(VERIFY, json={"token": "no such!"}))
    await expire_tokens(mail.app.state.database)
    expired = assert_unusable_token(await mail.client.post(VERIFY, json={"token": dave_token}))
    assert used == unknown == garbage == expired

    dave = await mail.db.scalar(select(User).where(User.username == "dave"))
    assert dave is not None
    assert dave.email_verified is False


async def test_a_malformed_request_is_a_422(mail: Mail) -> None:
    for body in ({}, {"token": ""}, {"token": 42}, {"token": "a", "extra": 1}, {"token": "a\nb"}):
        assert_problem(await mail.client.post(VERIFY, json=body), 422)


async def test_a_reset_token_does_not_verify(mail: Mail) -> None:
    account = await mail.register("carol")
    await mail.client.post("/api/v1/auth/password-reset", json={"email": account.email})
    mail.inbox.wait_for(2)
    reset_token = mail.last_to(account.email).token

    assert_unusable_token(await mail.client.post(VERIFY, json={"token": reset_token}))


async def test_racing_uses_of_one_token_let_exactly_one_win(mail: Mail) -> None:
    await mail.register("carol")
    token = mail.last_to("carol@example.com").token

    responses = await asyncio.gather(
        *(mail.client.post(VERIFY, json={"token": token}) for _ in range(8))
    )

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [204] + [400] * 7
    [row] = await mail.db.all(select(AccountToken))
    assert row.used_at is not None


async def test_the_link_follows_the_url_template(make_mail: MailFactory) -> None:
    mail = await make_mail(email_verification_url="https://shop.example/verify?t={token}&x=1")
    await mail.register("carol")

    welcome = mail.last_to("carol@example.com")
    link = welcome.link
    assert link.startswith("https://shop.example/verify?t=")
    assert link.endswith("&x=1")
    token = link.removeprefix("https://shop.example/verify?t=").removesuffix("&x=1")
    assert quote(token, safe="") == token
    assert (await mail.client.post(VERIFY, json={"token": token})).status_code == 204


async def test_a_new_address_is_unverified_and_old_links_stop_working(mail: Mail) -> None:
    account = await mail.register("carol")
    old_token = mail.last_to("carol@example.com").token
    assert (await mail.client.post(VERIFY, json={"token": old_token})).status_code == 204
    await mail.client.post(RESEND, headers=account.headers)  # verified already: 409, no mail
    await mail.client.post("/api/v1/auth/password-reset", json={"email": account.email})
    reset_token = mail.inbox.wait_for(2)[-1].token

    changed = await mail.client.patch(
        ME, json={"email": "carol@new.example"}, headers=account.headers
    )

    assert changed.status_code == 200
    assert changed.json()["email_verified"] is False
    [message] = mail.inbox.wait_for(3)[2:]
    assert message.recipients == ["carol@new.example"]
    assert message.message["Subject"] == "Confirm your email address"
    # The reset link sent to the old address no longer works.
    assert_unusable_token(
        await mail.client.post(
            "/api/v1/auth/password-reset/confirm",
            json={"token": reset_token, "new_password": "another passphrase"},
        )
    )
    assert (await mail.client.post(VERIFY, json={"token": message.token})).status_code == 204
    me = await mail.client.get(ME, headers=account.headers)
    assert me.json()["email_verified"] is True


async def test_a_verification_link_for_an_old_address_does_not_verify_the_new_one(
    mail: Mail,
) -> None:
    account = await mail.register("carol")
    old_token = mail.last_to("carol@example.com").token

    await mail.client.patch(ME, json={"email": "carol@new.example"}, headers=account.headers)
    await mail.client.patch(ME, json={"email": "carol@example.com"}, headers=account.headers)

    assert_unusable_token(await mail.client.post(VERIFY, json={"token": old_token}))
    me = await mail.client.get(ME, headers=account.headers)
    assert me.json()["email_verified"] is False


async def test_a_change_of_case_only_keeps_the_address_verified(mail: Mail) -> None:
    account = await mail.register("carol")
    await mail.client.post(VERIFY, json={"token": mail.last_to(account.email).token})

    changed = await mail.client.patch(
        ME, json={"email": "Carol@Example.com"}, headers=account.headers
    )

    assert changed.json()["email_verified"] is True
    assert len(mail.inbox.messages) == 1


async def test_an_admin_changing_the_address_sends_the_verification_there(mail: Mail) -> None:
    from tests.support import create_admin

    account = await mail.register("carol")
    admin = await create_admin(mail.client, mail.app, "root")

    response = await mail.client.patch(
        f"/api/v1/users/{account.id}", json={"email": "carol@corp.example"}, headers=admin.headers
    )

    assert response.json()["email_verified"] is False
    [message] = mail.inbox.wait_for(2)[1:]
    assert message.recipients == ["carol@corp.example"]
    assert "Hello carol" in message.body


async def test_a_change_that_rolls_back_sends_nothing(mail: Mail) -> None:
    account = await mail.register("carol")
    await mail.register("dave")
    before = await mail.outbox()

    taken = await mail.client.patch(ME, json={"email": "dave@example.com"}, headers=account.headers)
    duplicate = await register(mail.client, "carol2", email="CAROL@example.com")

    assert_problem(taken, 409)
    assert_problem(duplicate, 409)
    assert len(await mail.outbox()) == len(before) == 2
    assert len(mail.inbox.messages) == 2
    me = await mail.client.get(ME, headers=account.headers)
    assert me.json()["email"] == "carol@example.com"


async def test_a_user_can_ask_for_another_verification_message(mail: Mail) -> None:
    account = await mail.register("carol")
    first = mail.last_to(account.email).token

    response = await mail.client.post(RESEND, headers=account.headers)

    assert response.status_code == 202
    assert set(response.json()) == {"detail"}
    [again] = mail.inbox.wait_for(2)[1:]
    assert again.message["Subject"] == "Confirm your email address"
    assert again.token != first
    # Both links work until one of them is used.
    assert (await mail.client.post(VERIFY, json={"token": first})).status_code == 204
    assert (await mail.client.post(VERIFY, json={"token": again.token})).status_code == 204

    verified = await mail.client.post(RESEND, headers=account.headers)
    assert_problem(verified, 409)
    assert_unauthenticated(await mail.client.post(RESEND))


async def test_asking_for_verification_messages_is_limited_per_hour(
    make_mail: MailFactory,
) -> None:
    mail = await make_mail(email_verification_max_per_hour=2)
    account = await mail.register("carol")

    answers = [await mail.client.post(RESEND, headers=account.headers) for _ in range(3)]

    assert [a.status_code for a in answers[:2]] == [202, 202]
    limited = assert_problem(answers[2], 429)
    assert 3500 <= int(answers[2].headers["retry-after"]) <= 3600
    assert "2" in limited["detail"]
    mail.inbox.wait_for(3)
    kinds = [m.kind for m in await mail.outbox()]
    assert kinds == [MessageKind.WELCOME, MessageKind.VERIFY_EMAIL, MessageKind.VERIFY_EMAIL]


async def test_the_first_admin_is_verified_and_gets_no_welcome(mail: Mail) -> None:
    from tests.support import create_admin

    admin = await create_admin(mail.client, mail.app, "root")

    me = await mail.client.get(ME, headers=admin.headers)
    assert me.json()["email_verified"] is True
    assert await mail.outbox() == []
    assert_problem(await mail.client.post(RESEND, headers=admin.headers), 409)


async def test_the_link_opens_a_page_that_shows_the_token_and_the_call(mail: Mail) -> None:
    await mail.register("carol")
    link = urlsplit(mail.last_to("carol@example.com").link)

    page = await mail.client.get(f"{link.path}?{link.query}")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    token = mail.last_to("carol@example.com").token
    assert token in page.text
    assert f"{PUBLIC_URL}/api/v1/auth/verify-email" in page.text
    for asset in ("/account/assets/account.js", "/account/assets/account.css"):
        assert asset in page.text
        assert (await mail.client.get(asset)).status_code == 200


async def test_the_page_escapes_what_the_link_holds(client: httpx.AsyncClient) -> None:
    hostile = "<script>alert(1)</script>"
    page = await client.get("/account/verify-email", params={"token": hostile})
    assert page.status_code == 200
    assert hostile not in page.text
    assert "&lt;script&gt;" in page.text
    empty = await client.get("/account/verify-email")
    assert empty.status_code == 200
    assert "holds no token" in empty.text
