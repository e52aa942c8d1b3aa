"""The pages that account links open, in a real browser: the reset form and the verify button.

Headless Chromium (Debian's package) through Playwright, against the
production command mailing through a real SMTP server; the link is read out
of the received message. Skipped without Chromium; `.ci/run` installs it.
"""

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.mailbox import Inbox
from tests.server.conftest import Server, server_environment, start_server
from tests.server.test_swagger_ui import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a passphrase typed in a browser"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Chromium is not installed (apt-get install chromium)"
)


@pytest.fixture
def mailing_server(database_url: str, tmp_path: Path, inbox: tuple[Inbox, int]) -> Iterator[Server]:
    _, port = inbox
    environment = server_environment(
        database_url,
        tmp_path / "data",
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(port),
        SMTP_STARTTLS="false",
    )
    running = start_server(environment, tmp_path / "server.log")
    yield running
    running.stop()


def on_this_server(server: Server, link: str) -> str:
    """The link, opened on the server under test (PUBLIC_URL names its default address)."""
    parts = urlsplit(link)
    return f"{server.base_url}{parts.path}?{parts.query}"


def test_the_links_pages_verify_and_reset_in_a_browser(
    mailing_server: Server, inbox: tuple[Inbox, int], backend: str
) -> None:
    handler, _ = inbox
    api = f"{mailing_server.base_url}/api/v1"
    registered = httpx.post(
        f"{api}/users",
        json={"username": "carol", "email": "carol@example.com", "password": PASSWORD},
    )
    assert registered.status_code == 201
    [welcome] = handler.wait_for(1)
    assert (
        httpx.post(f"{api}/auth/password-reset", json={"email": "carol@example.com"}).status_code
        == 202
    )
    reset = handler.wait_for(2)[1]

    playwright_api = pytest.importorskip("playwright.sync_api")
    expect = playwright_api.expect
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 900})
            console: list[str] = []
            page.on("console", lambda message: console.append(message.text))

            page.goto(on_this_server(mailing_server, welcome.link))
            expect(page.locator("#token")).to_have_text(welcome.token)
            page.get_by_role("button", name="Verify my email address").click()
            expect(page.locator("#result")).to_have_text("Your email address is verified.")

            page.goto(on_this_server(mailing_server, reset.link))
            page.locator("#new-password").fill(NEW_PASSWORD)
            page.locator("#repeat-password").fill(NEW_PASSWORD + "!")
            page.get_by_role("button", name="Set my new password").click()
            expect(page.locator("#result")).to_have_text("The two passwords differ.")
            page.locator("#new-password").fill("short")
            page.locator("#repeat-password").fill("short")
            page.locator("#new-password").evaluate("node => node.removeAttribute('minlength')")
            page.locator("#repeat-password").evaluate("node => node.removeAttribute('minlength')")
            page.get_by_role("button", name="Set my new password").click()
            expect(page.locator("#result")).to_contain_text("at least 8 characters")
            page.locator("#new-password").fill(NEW_PASSWORD)
            page.locator("#repeat-password").fill(NEW_PASSWORD)
            page.get_by_role("button", name="Set my new password").click()
            expect(page.locator("#result")).to_have_text(
                "Your password is changed: sign in with it."
            )
            expect(page.locator("#flow")).to_be_hidden()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=ARTIFACTS / f"reset-password-{backend}.png")
            assert not [line for line in console if "Content Security Policy" in line], console
        finally:
            browser.close()

    token = httpx.post(f"{api}/auth/token", data={"username": "carol", "password": NEW_PASSWORD})
    assert token.status_code == 200
    me = httpx.get(
        f"{api}/users/me", headers={"Authorization": f"Bearer {token.json()['access_token']}"}
    )
    assert me.json()["email_verified"] is True
