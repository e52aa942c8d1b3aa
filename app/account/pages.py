"""The pages that a message's link opens when no URL template is set.

A real front end would have its own pages and set EMAIL_VERIFICATION_URL
and PASSWORD_RESET_URL; these make the flows usable without one: each shows
the token, says which API call to make with it, and makes it from a button
or a form. They load their script and style from this service only.
"""

import json
from html import escape
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from app.core.dependencies import SettingsDep

ASSETS = Path(__file__).parent / "assets"
PAGES_PREFIX = "/account/"

router = APIRouter(prefix="/account", include_in_schema=False)

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title} - Storefront API</title>
  <link rel="stylesheet" href="/account/assets/account.css">
</head>
<body>
  <main class="card" data-endpoint="{endpoint}">
    <p class="brand">Storefront API</p>
    <h1>{title}</h1>
    {content}
    <p id="result" role="status" aria-live="polite"></p>
  </main>
  <script src="/account/assets/account.js"></script>
</body>
</html>
"""

_NOTHING_IN_LINK = """<p class="problem">This link holds no token. Open the link from the message
    exactly as it came, or ask for a new message.</p>"""

_CALL = """<p>The token from your message:</p>
    <pre class="token" id="token">{token}</pre>
    <p>{explain}</p>
    <pre>curl -X POST {url} \\
  -H 'Content-Type: application/json' \\
  -d '{body}'</pre>"""


def _token_or_none(token: str | None) -> str | None:
    # Anything is shown (escaped); what is a token is for the API to say.
    return token if token and len(token) <= 1024 else None


def _page(title: str, endpoint: str, content: str) -> HTMLResponse:
    html = _PAGE.format(title=title, endpoint=endpoint, content=content)
    # The page holds a live secret: no cache, no history copy, no referrer.
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


TokenQuery = Annotated[str | None, Query(max_length=4096)]


@router.get("/verify-email")
async def verify_email_page(settings: SettingsDep, token: TokenQuery = None) -> HTMLResponse:
    endpoint = "/api/v1/auth/verify-email"
    found = _token_or_none(token)
    if found is None:
        return _page("Verify your email address", endpoint, _NOTHING_IN_LINK)
    content = (
        _CALL.format(
            token=escape(found),
            explain="Verify the address with the button below, or make this call yourself:",
            url=escape(settings.public_url + endpoint),
            body=escape(json.dumps({"token": found}).replace("'", "")),
        )
        + """
    <form id="flow">
      <button type="submit">Verify my email address</button>
    </form>"""
    )
    return _page("Verify your email address", endpoint, content)


@router.get("/reset-password")
async def reset_password_page(settings: SettingsDep, token: TokenQuery = None) -> HTMLResponse:
    endpoint = "/api/v1/auth/password-reset/confirm"
    found = _token_or_none(token)
    if found is None:
        return _page("Choose a new password", endpoint, _NOTHING_IN_LINK)
    content = (
        _CALL.format(
            token=escape(found),
            explain="Choose a new password here (8 to 128 characters), or make this call yourself:",
            url=escape(settings.public_url + endpoint),
            body=escape(json.dumps({"token": found, "new_password": "..."}).replace("'", "")),
        )
        + """
    <form id="flow">
      <label for="new-password">New password</label>
      <input id="new-password" name="new_password" type="password" autocomplete="new-password"
             minlength="8" maxlength="128" required>
      <label for="repeat-password">The same again</label>
      <input id="repeat-password" type="password" autocomplete="new-password"
             minlength="8" maxlength="128" required>
      <button type="submit">Set my new password</button>
    </form>"""
    )
    return _page("Choose a new password", endpoint, content)


def install_pages(app: FastAPI) -> None:
    app.mount("/account/assets", StaticFiles(directory=ASSETS), name="account-assets")
    app.include_router(router)
