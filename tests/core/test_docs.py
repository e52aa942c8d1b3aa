"""API.md "Operations": /docs, /redoc and /openapi.json, working with no internet access.

The docs pages load every script and style from the service itself (no CDN),
each asset they name is served with a sensible content type, Swagger UI is
version 5, and with `DOCS_ENABLED=false` none of it is served.
"""

import re
from html.parser import HTMLParser

import httpx

from tests.core.conftest import ClientFactory
from tests.support import assert_problem

ABSOLUTE_URL = re.compile(r"(?:https?:)?//[A-Za-z0-9.-]+", re.IGNORECASE)
CONTENT_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
}


class _AssetCollector(HTMLParser):
    """Every URL an HTML page makes the browser fetch (scripts, styles, icons, images)."""

    def __init__(self) -> None:
        super().__init__()
        self.assets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            if values.get("src"):
                self.assets.append(values["src"] or "")
        elif tag == "link" and values.get("href"):
            self.assets.append(values["href"] or "")
        elif tag in ("img", "iframe", "source") and values.get("src"):
            self.assets.append(values["src"] or "")


def _assets_of(html: str) -> list[str]:
    collector = _AssetCollector()
    collector.feed(html)
    return collector.assets


async def _assert_served_locally(client: httpx.AsyncClient, page: str) -> list[str]:
    response = await client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert not ABSOLUTE_URL.search(html), ABSOLUTE_URL.search(html)
    assets = _assets_of(html)
    assert assets
    for asset in assets:
        assert asset.startswith("/static/"), asset
        served = await client.get(asset)
        assert served.status_code == 200, asset
        suffix = asset[asset.rfind(".") :]
        assert served.headers["content-type"].split(";")[0] in CONTENT_TYPES[suffix], asset
        assert len(served.content) > 0
    return assets


async def test_swagger_ui_loads_everything_from_this_service(client: httpx.AsyncClient) -> None:
    assets = await _assert_served_locally(client, "/docs")
    assert any(a.endswith(".css") for a in assets)
    assert sum(a.endswith(".js") for a in assets) >= 2


async def test_redoc_loads_everything_from_this_service(client: httpx.AsyncClient) -> None:
    assets = await _assert_served_locally(client, "/redoc")
    assert any("redoc" in a and a.endswith(".js") for a in assets)


async def test_the_docs_pages_point_at_this_services_openapi(client: httpx.AsyncClient) -> None:
    swagger = (await client.get("/docs")).text
    assert 'data-openapi-url="/openapi.json"' in swagger
    assert 'data-oauth2-redirect-url="/docs/oauth2-redirect"' in swagger
    redoc = (await client.get("/redoc")).text
    assert 'spec-url="/openapi.json"' in redoc


async def test_the_swagger_initialiser_fetches_nothing_from_elsewhere(
    client: httpx.AsyncClient,
) -> None:
    assets = _assets_of((await client.get("/docs")).text)
    own_scripts = [a for a in assets if a.startswith("/static/app/")]
    assert own_scripts
    for script in own_scripts:
        source = (await client.get(script)).text
        assert "SwaggerUIBundle" in source
        assert not re.search(r"https?://", source)


async def test_the_docs_stylesheet_imports_nothing_from_elsewhere(
    client: httpx.AsyncClient,
) -> None:
    css = (await client.get("/static/vendor/swagger-ui.css")).text
    assert not re.search(r"@import|url\(\s*['\"]?(?:https?:)?//", css)


async def test_swagger_ui_is_version_5(client: httpx.AsyncClient) -> None:
    assets = _assets_of((await client.get("/docs")).text)
    [bundle] = [a for a in assets if "swagger-ui-bundle" in a]
    source = (await client.get(bundle)).text
    versions = re.findall(r'PACKAGE_VERSION\s*:\s*"(\d+)\.(\d+)\.(\d+)"', source)
    assert versions, "no version string in the Swagger UI bundle"
    assert {major for major, _, _ in versions} == {"5"}


async def test_the_oauth2_redirect_page_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs/oauth2-redirect")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "oauth2" in response.text.lower()
    assert not ABSOLUTE_URL.search(response.text)


async def test_the_openapi_document_is_served_as_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"]
    assert document["paths"]


async def test_static_files_outside_the_asset_folders_are_not_served(
    client: httpx.AsyncClient,
) -> None:
    for path in (
        "/static/vendor/",
        "/static/vendor/../../main.py",
        "/static/vendor/%2e%2e/%2e%2e/main.py",
        "/static/app/%2e%2e/main.py",
        "/static/vendor/..%2f..%2fmain.py",
    ):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert "create_app" not in response.text


async def test_docs_can_be_switched_off(make_client: ClientFactory) -> None:
    client = await make_client(docs_enabled=False)
    for path in (
        "/docs",
        "/redoc",
        "/openapi.json",
        "/docs/oauth2-redirect",
        "/static/vendor/swagger-ui-bundle.js",
        "/static/app/swagger-init.js",
    ):
        assert_problem(await client.get(path), 404)
    # The API itself is unaffected.
    assert (await client.get("/api/v1/products")).status_code == 200
