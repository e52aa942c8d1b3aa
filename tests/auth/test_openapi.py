"""The OpenAPI document's view of auth: Swagger UI's "Authorize" uses the password flow.

Covers API.md's line that Swagger UI's Authorize button works with the token
endpoint (OAuth2 password flow), and that the token endpoint takes a form.
"""

from typing import Any

import httpx

TOKEN_URL = "/api/v1/auth/token"


async def openapi(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def password_schemes(document: dict[str, Any]) -> dict[str, Any]:
    schemes = document["components"]["securitySchemes"]
    return {
        name: scheme
        for name, scheme in schemes.items()
        if scheme["type"] == "oauth2" and "password" in scheme.get("flows", {})
    }


async def test_openapi_declares_the_password_flow_at_the_token_endpoint(
    client: httpx.AsyncClient,
) -> None:
    schemes = password_schemes(await openapi(client))

    assert len(schemes) == 1, schemes
    (scheme,) = schemes.values()
    assert scheme["flows"]["password"]["tokenUrl"] == TOKEN_URL


async def test_protected_routes_require_the_password_scheme(client: httpx.AsyncClient) -> None:
    document = await openapi(client)
    (name,) = password_schemes(document)

    for method in ("get", "patch", "delete"):
        operation = document["paths"]["/api/v1/users/me"][method]
        assert {name: []} in operation["security"], operation.get("security")
    # The auth endpoints themselves are open.
    for path in (TOKEN_URL, "/api/v1/auth/refresh", "/api/v1/auth/logout"):
        assert not document["paths"][path]["post"].get("security")


async def test_token_endpoint_is_documented_as_a_form_post(client: httpx.AsyncClient) -> None:
    document = await openapi(client)
    operation = document["paths"][TOKEN_URL]["post"]

    content = operation["requestBody"]["content"]
    assert list(content) == ["application/x-www-form-urlencoded"]
    schema = content["application/x-www-form-urlencoded"]["schema"]
    if "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    # Which fields are needed depends on grant_type: none is required by itself.
    assert not schema.get("required")
    assert {"username", "password", "grant_type", "refresh_token"} <= set(schema["properties"])
    examples = content["application/x-www-form-urlencoded"]["examples"]
    assert {e["value"]["grant_type"] for e in examples.values()} == {"password", "refresh_token"}
    assert "400" in operation["responses"]
    assert "429" in operation["responses"]
