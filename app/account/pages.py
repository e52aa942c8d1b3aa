"""The pages that a message's link opens when no URL template is set.

A real front end would have its own pages and set EMAIL_VERIFICATION_URL
and PASSWORD_RESET_URL; these make the flows usable without one: each shows
the token, says which API call to make with it, and makes it from a button
or a form. They load their script and style from this service only.
"""

import json
from dataclasses import dataclass
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


@dataclass(frozen=True)
class LinkPage:
    title: str
    endpoint: str
    explain: str
    # The body of the call, the token aside: what the example shows besides.
    example: dict[str, str]
    form: str

    def render(self, public_url: str, token: str | None) -> HTMLResponse:
        if not token or len(token) > 1024:
            content = _NOTHING_IN_LINK
        else:
            # Anything is shown (escaped); what is a token is for the API to say.
            example = json.dumps({"token": token, **self.example}).replace("'", "")
            content = _CALL.format(
                token=escape(token),
                explain=self.explain,
                url=escape(public_url + self.endpoint),
                body=escape(example),
            )
            content += self.form
        html = _PAGE.format(title=self.title, endpoint=self.endpoint, content=content)
        # The page holds a live secret: no cache, no history copy, no referrer.
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})


VERIFY_EMAIL = LinkPage(
    title="Verify your email address",
    endpoint="/api/v1/auth/verify-email",
    explain="Verify the address with the button below, or make this call yourself:",
    example={},
    form="""
    <form id="flow">
      <button type="submit">Verify my email address</button>
    </form>""",
)
RESET_PASSWORD = LinkPage(
    title="Choose a new password",
    endpoint="/api/v1/auth/password-reset/confirm",
    explain="Choose a new password here (8 to 128 characters), or make this call yourself:",
    example={"new_password": "..."},
    form="""
    <form id="flow">
      <label for="new-password">New password</label>
      <input id="new-password" name="new_password" type="password" autocomplete="new-password"
             minlength="8" maxlength="128" required>
      <label for="repeat-password">The same again</label>
      <input id="repeat-password" type="password" autocomplete="new-password"
             minlength="8" maxlength="128" required>
      <button type="submit">Set my new password</button>
    </form>""",
)

TokenQuery = Annotated[str | None, Query(max_length=4096)]


@router.get("/verify-email")
async def verify_email_page(settings: SettingsDep, token: TokenQuery = None) -> HTMLResponse:
    return VERIFY_EMAIL.render(settings.public_url, token)


@router.get("/reset-password")
async def reset_password_page(settings: SettingsDep, token: TokenQuery = None) -> HTMLResponse:
    return RESET_PASSWORD.render(settings.public_url, token)


def install_pages(app: FastAPI) -> None:
    app.mount("/account/assets", StaticFiles(directory=ASSETS), name="account-assets")
    app.include_router(router)
