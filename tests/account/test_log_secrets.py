"""No one-time token, password or hash reaches a log line (API.md 1.1: a token of these flows
appears nowhere but in the message itself).

Every account flow runs once at LOG_LEVEL=DEBUG, with the service's own JSON
logging, mailing through a real SMTP server; then every token received, every
password sent and every hash stored is looked for in what was logged.
"""

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from app.account.models import AccountToken
from app.users.models import User
from tests.account.conftest import Mail, MailFactory
from tests.account.helpers import CONFIRM, ME, RESEND, RESET, VERIFY
from tests.conftest import make_settings
from tests.support import bearer, login, service_logging

PASSWORD = "the first passphrase"
NEW_PASSWORD = "the second passphrase"


@pytest.fixture
def debug_log(tmp_path: Path) -> Iterator[io.StringIO]:
    settings = make_settings(
        "sqlite+aiosqlite://", tmp_path / "log", log_level="DEBUG", log_format="json"
    )
    # The test's own SMTP server and HTTP client log what they receive and the
    # URLs they fetch; they are not the service.
    outsiders = [logging.getLogger(name) for name in ("mail.log", "httpx")]
    levels = [logger.level for logger in outsiders]
    with service_logging(settings) as buffer:
        for logger in outsiders:
            logger.setLevel(logging.WARNING)
        try:
            yield buffer
        finally:
            for logger, level in zip(outsiders, levels, strict=True):
                logger.setLevel(level)


async def test_no_token_password_or_hash_is_logged_by_any_flow(
    make_mail: MailFactory, debug_log: io.StringIO
) -> None:
    mail: Mail = await make_mail(log_level="DEBUG")
    client = mail.client
    account = await mail.register("carol", PASSWORD)
    welcome_token = mail.last_to(account.email).token

    assert (await client.post(RESEND, headers=account.headers)).status_code == 202
    assert (await client.post(VERIFY, json={"token": welcome_token})).status_code == 204
    assert (await client.post(VERIFY, json={"token": welcome_token})).status_code == 400
    assert (await client.post(RESET, json={"email": account.email})).status_code == 202
    assert (await client.post(RESET, json={"email": "nobody@example.com"})).status_code == 202
    reset_token = mail.inbox.wait_for(3)[2].token
    wrong = await client.post(CONFIRM, json={"token": reset_token + "x", "new_password": "short"})
    assert wrong.status_code == 422
    confirmed = await client.post(
        CONFIRM, json={"token": reset_token, "new_password": NEW_PASSWORD}
    )
    assert confirmed.status_code == 204
    tokens = (await login(client, "carol", NEW_PASSWORD)).json()
    changed = await client.patch(
        ME, json={"email": "carol@new.example"}, headers=bearer(tokens["access_token"])
    )
    assert changed.status_code == 200
    received = mail.inbox.wait_for(4)
    page = await client.get("/account/reset-password", params={"token": reset_token})
    assert page.status_code == 200

    one_time = [message.token for message in received]
    assert len(set(one_time)) == 4
    stored = [row.token_hash for row in await mail.db.all(select(AccountToken))]
    user = await mail.db.scalar(select(User).where(User.username == "carol"))
    assert user is not None
    logged = debug_log.getvalue()
    assert "POST /api/v1/auth/password-reset/confirm" in logged, "expected the requests logged"
    assert "Reset your password" not in logged  # sent by SMTP, not written to the log
    for secret in (*one_time, *stored, PASSWORD, NEW_PASSWORD, user.password_hash):
        assert secret not in logged
    assert "$argon2" not in logged
