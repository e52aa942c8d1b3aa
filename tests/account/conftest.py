"""An app that mails through a real SMTP server, for the account flows end to end."""

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.mail.models import OutboxMessage
from tests.mailbox import Inbox, Received, smtp_settings
from tests.support import DEFAULT_PASSWORD, Account, DatabaseProbe, client_for, create_account

PUBLIC_URL = "https://api.shop.example"


@dataclass
class Mail:
    """The app, its client, the mailbox every message lands in, and the database."""

    app: FastAPI
    client: httpx.AsyncClient
    inbox: Inbox
    db: DatabaseProbe

    async def register(self, username: str, password: str = DEFAULT_PASSWORD) -> Account:
        """Registers, waits for the welcome, and signs in."""
        before = len(self.inbox.messages)
        account = await self.register_without_waiting(username, password)
        self.inbox.wait_for(before + 1)
        return account

    async def register_without_waiting(
        self, username: str, password: str = DEFAULT_PASSWORD
    ) -> Account:
        return await create_account(self.client, username, password)

    def last_to(self, address: str) -> Received:
        received = self.inbox.to(address)
        assert received, f"no message to {address}"
        return received[-1]

    async def outbox(self) -> list[OutboxMessage]:
        return list(await self.db.all(select(OutboxMessage).order_by(OutboxMessage.id)))


MailFactory = Callable[..., Awaitable[Mail]]


@pytest.fixture
async def make_mail(
    database_url: str, tmp_path: Path, inbox: tuple[Inbox, int]
) -> AsyncIterator[MailFactory]:
    """Builds apps with extra settings, all on this test's database and mailbox."""
    handler, port = inbox
    opened: list[Any] = []

    async def make(**overrides: Any) -> Mail:
        settings = smtp_settings(
            database_url,
            tmp_path / f"data{len(opened)}",
            port,
            **{"public_url": PUBLIC_URL, **overrides},
        )
        context = client_for(settings)
        app, client = await context.__aenter__()
        opened.append(context)
        return Mail(app, client, handler, DatabaseProbe(app.state.database))

    yield make
    for context in reversed(opened):
        await context.__aexit__(None, None, None)


@pytest.fixture
async def mail(make_mail: MailFactory) -> Mail:
    return await make_mail()
