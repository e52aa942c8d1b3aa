"""Security headers on every response, and CORS only for the configured origins."""

import httpx
import pytest

from tests.core.conftest import ClientFactory
from tests.support import Account


def policy(response: httpx.Response) -> dict[str, str]:
    """The Content-Security-Policy as {directive: sources}."""
    directives = (part.strip() for part in response.headers["content-security-policy"].split(";"))
    return {name: rest for name, _, rest in (d.partition(" ") for d in directives if d)}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/health/live"),
        ("GET", "/api/v1/products"),
        ("GET", "/api/v1/products/999"),  # 404
        ("POST", "/api/v1/products"),  # 401
        ("DELETE", "/api/v1/products"),  # 405
        ("GET", "/api/v1/products?limit=0"),  # 422
        ("GET", "/nowhere"),
    ],
)
async def test_every_api_response_carries_the_security_headers(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"
    assert policy(response)["default-src"] == "'none'"
    assert policy(response)["frame-ancestors"] == "'none'"
    assert "strict-transport-security" not in response.headers  # plain HTTP


async def test_a_500_carries_them_too(app, client: httpx.AsyncClient) -> None:
    async def explode() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/explode", explode)
    response = await client.get("/explode")
    assert response.status_code == 500
    assert response.headers["x-content-type-options"] == "nosniff"
    assert policy(response)["default-src"] == "'none'"


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/static/vendor/swagger-ui.css"])
async def test_docs_pages_may_load_only_their_own_scripts_and_styles(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    directives = policy(response)
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'" or directives["script-src"].startswith("'self' ")
    assert "'unsafe-inline'" not in directives["script-src"]
    assert "'unsafe-eval'" not in directives["script-src"]
    assert "http" not in response.headers["content-security-policy"]  # no other origin
    assert directives["connect-src"] == "'self'"


async def test_the_oauth2_redirect_page_may_run_exactly_its_own_inline_script(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/docs/oauth2-redirect")
    assert response.status_code == 200
    sources = policy(response)["script-src"].split()
    assert sources[0] == "'self'"
    hashes = [s for s in sources if s.startswith("'sha256-")]
    assert len(hashes) == response.text.count("<script")


async def test_hsts_is_sent_over_https(app) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        response = await client.get("/health/live")
    assert response.headers["strict-transport-security"].startswith("max-age=")
    assert (
        int(response.headers["strict-transport-security"].split("=")[1].split(";")[0]) >= 15552000
    )


async def test_hsts_follows_a_trusted_proxy_that_says_https(client: httpx.AsyncClient) -> None:
    # Behind a proxy the scheme arrives in X-Forwarded-Proto; Uvicorn applies it
    # (for FORWARDED_ALLOW_IPS), and without it there is no HTTPS to vouch for.
    response = await client.get("/health/live", headers={"X-Forwarded-Proto": "https"})
    assert "strict-transport-security" not in response.headers


@pytest.fixture
async def cors_client(make_client: ClientFactory) -> httpx.AsyncClient:
    return await make_client(cors_origins=["https://shop.example.com", "http://localhost:3000"])


async def test_cors_allows_a_configured_origin(cors_client: httpx.AsyncClient) -> None:
    response = await cors_client.get(
        "/api/v1/products", headers={"Origin": "https://shop.example.com"}
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://shop.example.com"
    exposed = {
        h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")
    }
    assert {"etag", "location", "x-request-id"} <= exposed


async def test_cors_preflight_for_a_configured_origin(cors_client: httpx.AsyncClient) -> None:
    response = await cors_client.options(
        "/api/v1/products/1",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "authorization, if-match, content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "PATCH" in response.headers["access-control-allow-methods"]
    assert "if-match" in response.headers["access-control-allow-headers"].lower()


async def test_cors_ignores_an_origin_not_configured(cors_client: httpx.AsyncClient) -> None:
    response = await cors_client.get("/api/v1/products", headers={"Origin": "https://evil.example"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    preflight = await cors_client.options(
        "/api/v1/products",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 403
    assert preflight.headers["content-type"] == "application/problem+json"
    assert preflight.json()["detail"].startswith("This cross-origin request is not allowed")
    assert preflight.json()["request_id"] == preflight.headers["x-request-id"]
    assert "access-control-allow-origin" not in preflight.headers


async def test_without_cors_origins_no_origin_is_allowed(
    client: httpx.AsyncClient, user: Account
) -> None:
    response = await client.get(
        "/api/v1/users/me", headers={**user.headers, "Origin": "https://shop.example.com"}
    )
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
