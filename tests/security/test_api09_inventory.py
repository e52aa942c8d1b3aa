"""OWASP API9:2023 Improper Inventory Management, applied to this service.

The inventory of this service is its OpenAPI document. The risk is a
route that is served but not in it (a forgotten debug endpoint, an old
unversioned copy of a route) and so is never reviewed, secured or retired;
or a documented route that no longer exists, so clients and reviewers look
at the wrong thing.

The defences shown here: routes are only added through the routers that
generate the document, so the document and the routes served are the same
set; every resource lives under the one version prefix `/api/v1`; what is
served but not documented is only the docs themselves (Swagger UI, ReDoc,
the OpenAPI JSON and their static assets) and the two HTML pages that the
links of account messages open (`/account/verify-email`,
`/account/reset-password`, with their script and style); outside `/api/v1` there are only
the operations probes `/health/live`, `/health/ready` and `/metrics`
(the last is not in API.md: see the report); any other path, such as an
unversioned or other-version copy of a route, is a 404.
"""

import httpx
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from starlette.routing import Mount

from tests.security.common import API_PREFIX, operations
from tests.support import assert_problem

OPERATIONS_PATHS = {"/health/live", "/health/ready", "/metrics"}
UNDOCUMENTED_DOCS = {
    "/openapi.json",
    "/asyncapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
}
LINK_PAGES = {"/account/verify-email", "/account/reset-password"}
STATIC_MOUNTS = {"/static/vendor", "/static/app", "/account/assets"}


def served(app: FastAPI, *, in_schema: bool) -> set[tuple[str, str]]:
    """(method, path) of every route that has methods, documented or not."""
    found = set()
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, Mount) or context.methods is None:
            continue
        if bool(getattr(route, "include_in_schema", True)) != in_schema:
            continue
        for method in context.methods:
            if method != "HEAD":  # answered for every GET by the HEAD middleware
                found.add((method, str(context.path_format)))
    return found


async def test_the_document_lists_exactly_the_routes_served(app: FastAPI) -> None:
    documented = {op.key for op in operations(app)}
    assert documented == served(app, in_schema=True)


async def test_only_the_docs_and_link_pages_are_served_without_being_documented(
    app: FastAPI,
) -> None:
    hidden = served(app, in_schema=False)
    assert {path for _, path in hidden} == UNDOCUMENTED_DOCS | LINK_PAGES
    assert {method for method, _ in hidden} == {"GET"}
    mounts = {route.path for route in app.routes if isinstance(route, Mount)}
    assert mounts == STATIC_MOUNTS


async def test_every_documented_path_is_versioned_or_an_operations_probe(app: FastAPI) -> None:
    for op in operations(app):
        assert op.path.startswith(API_PREFIX + "/") or op.path in OPERATIONS_PATHS, op.key
    document = app.openapi()
    assert document["info"]["version"]
    assert document["info"]["title"]


async def test_every_documented_operation_is_really_served(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    for op in operations(app):
        body = {} if "requestBody" in op.spec else None
        response = await client.request(op.method, op.url(), json=body)
        assert response.status_code != 405, op.key
        if response.status_code == 404:
            assert not response.json()["detail"].startswith("Nothing is served"), op.key


UNSERVED_PATHS = (
    "/products",
    "/users",
    "/api/products",
    "/api/users/1",
    "/v1/products",
    "/api/v0/products",
    "/api/v2/products",
    "/api/v1.1/products",
    "/API/V1/products",
    "/api/v1/admin",
    "/api/v1/debug",
    "/api/v1/internal/users",
    "/api/v1/products/1/owner",
    "/admin",
    "/debug",
    "/health",
    "/.env",
    "/.git/config",
)
# Under the static mounts, which serve GET only; the app's own files stay out of reach.
ESCAPES = ("/static/vendor/../../app/core/config.py", "/static/app/%2e%2e/%2e%2e/.env")


async def test_unversioned_and_unknown_copies_of_routes_are_not_served(
    client: httpx.AsyncClient,
) -> None:
    for path in UNSERVED_PATHS:
        for method in ("GET", "POST", "DELETE"):
            response = await client.request(method, path)
            assert_problem(response, 404)
            assert response.json()["detail"].startswith("Nothing is served"), (method, path)
            assert "secret" not in response.text.lower(), path
    for path in ESCAPES:
        response = await client.get(path)
        assert_problem(response, 404)
        assert "secret" not in response.text.lower(), path
