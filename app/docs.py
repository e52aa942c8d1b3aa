"""Swagger UI and ReDoc, served with their assets from this service (no CDN)."""

import base64
import hashlib
import re
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from app.events.asyncapi import ASYNCAPI_URL

# Swagger UI 5 and ReDoc bundles, shipped by the fastapi-offline package.
VENDOR_ASSETS = Path(str(files("fastapi_offline") / "static"))
OWN_ASSETS = Path(__file__).parent / "static"

_SWAGGER_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title} - Swagger UI</title>
  <link rel="icon" href="/static/vendor/favicon.png">
  <link rel="stylesheet" href="/static/vendor/swagger-ui.css">
  <style>
    .docs-links {{ max-width: 1420px; margin: 0 auto; padding: 12px 20px 0;
      color: #3b4151; font: 14px sans-serif; }}
    .docs-links a {{ color: #4990e2; }}
  </style>
</head>
<body data-openapi-url="{openapi_url}" data-oauth2-redirect-url="/docs/oauth2-redirect">
  <nav class="docs-links">Live product events (Server-Sent Events and WebSocket):
    <a href="{asyncapi_url}">AsyncAPI document, {asyncapi_url}</a></nav>
  <div id="swagger-ui"></div>
  <script src="/static/vendor/swagger-ui-bundle.js"></script>
  <script src="/static/app/swagger-init.js"></script>
</body>
</html>
"""

_REDOC_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title} - ReDoc</title>
  <link rel="icon" href="/static/vendor/favicon.png">
</head>
<body>
  <redoc spec-url="{openapi_url}"></redoc>
  <script src="/static/vendor/redoc.standalone.js"></script>
</body>
</html>
"""


DOCS_PATHS = ("/docs", "/redoc", "/static/")


def inline_script_hashes() -> list[str]:
    """CSP hashes of the inline scripts the docs pages have (only the OAuth2 redirect page)."""
    page = bytes(get_swagger_ui_oauth2_redirect_html().body).decode()
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", page, flags=re.DOTALL)
    return [
        "sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() for s in scripts
    ]


def install_docs(app: FastAPI, openapi_url: str) -> None:
    app.mount("/static/vendor", StaticFiles(directory=VENDOR_ASSETS), name="vendor-assets")
    app.mount("/static/app", StaticFiles(directory=OWN_ASSETS), name="app-assets")
    swagger = _SWAGGER_PAGE.format(
        title=app.title, openapi_url=openapi_url, asyncapi_url=ASYNCAPI_URL
    )
    redoc = _REDOC_PAGE.format(title=app.title, openapi_url=openapi_url)

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(swagger)

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc_ui() -> HTMLResponse:
        return HTMLResponse(redoc)
