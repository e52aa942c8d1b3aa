"""Swagger UI in a real browser: Authorize with the password flow, then "Try it out".

Runs headless Chromium (Debian's package) through Playwright against the
production command. Skipped when Chromium is not installed; `.ci/run`
installs it. The screenshot lands in test-artifacts/.
"""

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.conftest import PROJECT_ROOT, Server, server_environment, start_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without these flags Chromium reaches for Google's services on a closed network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
ADMIN = {"username": "root", "email": "root@example.com", "password": "correct horse battery"}

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Chromium is not installed (apt-get install chromium)"
)


@pytest.fixture
def documented_server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    """The production command, after `python -m app migrate` created the first admin."""
    environment = server_environment(
        database_url,
        tmp_path / "data",
        FIRST_ADMIN_USERNAME=ADMIN["username"],
        FIRST_ADMIN_EMAIL=ADMIN["email"],
        FIRST_ADMIN_PASSWORD=ADMIN["password"],
    )
    subprocess.run(
        [sys.executable, "-m", "app", "migrate"], cwd=PROJECT_ROOT, env=environment, check=True
    )
    running = start_server(environment, tmp_path / "server.log")
    yield running
    running.stop()


def test_authorize_then_try_it_out_on_users_me(documented_server: Server, backend: str) -> None:
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            console: list[str] = []
            page.on("console", lambda message: console.append(message.text))
            page.goto(f"{documented_server.base_url}/docs")
            page.locator("button.authorize").first.click()

            dialog = page.locator(".modal-ux")
            dialog.locator("input#oauth_username").fill(ADMIN["username"])
            dialog.locator("input#oauth_password").fill(ADMIN["password"])
            dialog.locator("button.modal-btn.authorize").click()
            # Swagger UI confirms, and its button now offers to log out.
            playwright_api.expect(dialog.get_by_text("Authorized", exact=True)).to_be_visible()
            playwright_api.expect(
                dialog.get_by_role("button", name="Remove authorization")
            ).to_be_visible()
            dialog.locator("button.btn-done").click()

            operation = page.locator("#operations-users-read_me")
            operation.locator(".opblock-summary").click()
            operation.locator("button.try-out__btn").click()
            operation.locator("button.execute").click()

            response = operation.locator(".live-responses-table .response")
            playwright_api.expect(response.locator(".response-col_status").first).to_have_text(
                "200"
            )
            playwright_api.expect(response.locator(".response-col_description")).to_contain_text(
                f'"username": "{ADMIN["username"]}"'
            )
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=ARTIFACTS / f"swagger-users-me-{backend}.png", full_page=True)
            # The Content-Security-Policy let everything the page needed through.
            assert not [line for line in console if "Content Security Policy" in line], console
        finally:
            browser.close()


def test_redoc_renders_the_api_from_local_assets(documented_server: Server, backend: str) -> None:
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            console: list[str] = []
            page.on("console", lambda message: console.append(message.text))
            page.goto(f"{documented_server.base_url}/redoc")
            heading = page.get_by_role("heading", name="Storefront API", exact=False).first
            playwright_api.expect(heading).to_be_visible(timeout=20_000)
            playwright_api.expect(
                page.get_by_text("Sign in, or refresh (OAuth2 password and refresh grants)").first
            ).to_be_attached()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=ARTIFACTS / f"redoc-{backend}.png")
            # ReDoc always renders a "powered by" badge from its CDN; the policy
            # refuses it (nothing leaves for a CDN) and ReDoc hides the image.
            # Anything else refused would be a page this service broke.
            refused = [line for line in console if "Content Security Policy" in line]
            assert all("cdn.redoc.ly/redoc/logo-mini.svg" in line for line in refused), refused
        finally:
            browser.close()
