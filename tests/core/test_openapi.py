"""The OpenAPI document (API.md "Operations", and "write the choice into the OpenAPI document").

Every operation is tagged and summarised; error responses are declared as
`application/problem+json` with the problem schemas; the headers API.md
promises (`Location`, `ETag`, `WWW-Authenticate`, `Retry-After`) are
declared; request bodies carry examples; the OAuth2 password flow that
Swagger UI's "Authorize" button uses points at the token endpoint.
"""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

TAGS = {"auth", "users", "products", "health"}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


@pytest.fixture
async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield method.upper(), path, operation


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = document["components"]["schemas"][name]
    return schema


def _schema_name(schema: dict[str, Any]) -> str:
    return str(schema.get("$ref", "")).rsplit("/", 1)[-1]


async def test_the_document_lists_every_api_operation(document: dict[str, Any]) -> None:
    found = {(method, path) for method, path, _ in _operations(document)}
    expected = {
        ("POST", "/api/v1/auth/token"),
        ("POST", "/api/v1/auth/refresh"),
        ("POST", "/api/v1/auth/logout"),
        ("POST", "/api/v1/auth/verify-email"),
        ("POST", "/api/v1/auth/password-reset"),
        ("POST", "/api/v1/auth/password-reset/confirm"),
        ("POST", "/api/v1/users"),
        ("GET", "/api/v1/users"),
        ("GET", "/api/v1/users/me"),
        ("PATCH", "/api/v1/users/me"),
        ("DELETE", "/api/v1/users/me"),
        ("POST", "/api/v1/users/me/password"),
        ("POST", "/api/v1/users/me/verification"),
        ("GET", "/api/v1/users/{user_id}"),
        ("PATCH", "/api/v1/users/{user_id}"),
        ("DELETE", "/api/v1/users/{user_id}"),
        ("GET", "/api/v1/products"),
        ("GET", "/api/v1/products/events"),
        ("POST", "/api/v1/products"),
        ("GET", "/api/v1/products/{product_id}"),
        ("PUT", "/api/v1/products/{product_id}"),
        ("PATCH", "/api/v1/products/{product_id}"),
        ("DELETE", "/api/v1/products/{product_id}"),
        ("GET", "/health/live"),
        ("GET", "/health/ready"),
        ("GET", "/metrics"),
    }
    assert found == expected


async def test_every_operation_has_a_known_tag_and_a_summary(document: dict[str, Any]) -> None:
    declared_tags = {tag["name"] for tag in document["tags"]}
    assert declared_tags == TAGS
    for method, path, operation in _operations(document):
        assert len(operation["tags"]) == 1, (method, path)
        assert operation["tags"][0] in TAGS, (method, path)
        assert operation.get("summary", "").strip(), (method, path)
        operational = path.startswith(("/health", "/metrics"))
        expected_tag = "health" if operational else path.split("/")[3]
        assert operation["tags"] == [expected_tag], (method, path)


async def test_every_error_response_is_problem_json(document: dict[str, Any]) -> None:
    problem_schemas = {"Problem", "ValidationProblem", "OAuth2Problem"}
    for method, path, operation in _operations(document):
        for status, response in operation["responses"].items():
            if not status.isdigit() or int(status) < 400:
                continue
            content = response.get("content", {})
            assert list(content) == ["application/problem+json"], (method, path, status)
            schema = content["application/problem+json"]["schema"]
            assert _schema_name(schema) in problem_schemas, (method, path, status, schema)


async def test_422_responses_declare_the_errors_list(document: dict[str, Any]) -> None:
    issue = _resolve(document, {"$ref": "#/components/schemas/ValidationIssue"})
    assert set(issue["properties"]) == {"loc", "msg", "type"}
    for method, path, operation in _operations(document):
        response = operation["responses"].get("422")
        if response is None:
            continue
        schema = response["content"]["application/problem+json"]["schema"]
        assert _schema_name(schema) == "ValidationProblem", (method, path)


async def test_the_token_endpoint_declares_oauth2_errors_not_422(
    document: dict[str, Any],
) -> None:
    responses = document["paths"]["/api/v1/auth/token"]["post"]["responses"]
    assert "422" not in responses
    schema = responses["400"]["content"]["application/problem+json"]["schema"]
    oauth2_problem = _resolve(document, schema)
    assert "error" in oauth2_problem["properties"]
    assert "429" in responses
    assert "Retry-After" in responses["429"]["headers"]


async def test_creation_declares_its_location_and_etag_headers(document: dict[str, Any]) -> None:
    user = document["paths"]["/api/v1/users"]["post"]["responses"]
    assert set(user) >= {"201", "409", "422"}
    assert "Location" in user["201"]["headers"]

    product = document["paths"]["/api/v1/products"]["post"]["responses"]
    assert {"Location", "ETag"} <= set(product["201"]["headers"])

    read = document["paths"]["/api/v1/products/{product_id}"]["get"]["responses"]
    assert "ETag" in read["200"]["headers"]
    assert "304" in read


async def test_conditional_changes_declare_412_and_if_match(document: dict[str, Any]) -> None:
    item = document["paths"]["/api/v1/products/{product_id}"]
    for method in ("put", "patch", "delete"):
        operation = item[method]
        assert "412" in operation["responses"], method
        headers = {p["name"].lower() for p in operation["parameters"] if p["in"] == "header"}
        assert "if-match" in headers, method
    get_headers = {p["name"].lower() for p in item["get"]["parameters"] if p["in"] == "header"}
    assert "if-none-match" in get_headers


async def test_every_request_body_has_an_example(document: dict[str, Any]) -> None:
    bodies = 0
    for method, path, operation in _operations(document):
        body = operation.get("requestBody")
        if body is None:
            continue
        bodies += 1
        [(media_type, content)] = body["content"].items()
        assert media_type in ("application/json", "application/x-www-form-urlencoded")
        if "example" in content or "examples" in content:
            continue
        schema = _resolve(document, content["schema"])
        if "example" in schema or "examples" in schema:
            continue
        required = schema.get("required", [])
        assert required, (method, path)
        for name in required:
            assert "examples" in schema["properties"][name], (method, path, name)
    assert bodies >= 9


async def test_the_oauth2_password_flow_points_at_the_token_endpoint(
    document: dict[str, Any],
) -> None:
    schemes = document["components"]["securitySchemes"]
    oauth2 = [s for s in schemes.values() if s["type"] == "oauth2"]
    assert len(oauth2) == 1
    assert oauth2[0]["flows"]["password"]["tokenUrl"] == "/api/v1/auth/token"


async def test_protected_operations_declare_401_with_a_bearer_challenge(
    document: dict[str, Any],
) -> None:
    protected = []
    for method, path, operation in _operations(document):
        if not operation.get("security"):
            continue
        protected.append((method, path))
        response = operation["responses"].get("401")
        assert response is not None, (method, path)
        assert "WWW-Authenticate" in response["headers"], (method, path)
    # Everything under /users except registration, and every product change.
    assert ("GET", "/api/v1/users/me") in protected
    assert ("POST", "/api/v1/products") in protected
    assert ("DELETE", "/api/v1/products/{product_id}") in protected
    assert ("POST", "/api/v1/users") not in protected
    assert ("GET", "/api/v1/products") not in protected
    assert ("POST", "/api/v1/users/me/verification") in protected
    assert ("POST", "/api/v1/auth/password-reset") not in protected
    assert len(protected) == 13


async def test_admin_operations_declare_403(document: dict[str, Any]) -> None:
    for method, path, operation in _operations(document):
        if path.startswith("/api/v1/users") and "/me" not in path and operation.get("security"):
            assert "403" in operation["responses"], (method, path)


async def test_database_backed_operations_declare_503_with_retry_after(
    document: dict[str, Any],
) -> None:
    for method, path, operation in _operations(document):
        if path in ("/health/live", "/metrics"):  # neither needs the database
            assert "503" not in operation["responses"]
            continue
        response = operation["responses"].get("503")
        assert response is not None, (method, path)
        assert "Retry-After" in response["headers"], (method, path)


async def test_operations_with_a_body_declare_413(document: dict[str, Any]) -> None:
    for method, path, operation in _operations(document):
        if "requestBody" in operation:
            assert "413" in operation["responses"], (method, path)


async def test_problem_schema_has_the_rfc_9457_members(document: dict[str, Any]) -> None:
    problem = _resolve(document, {"$ref": "#/components/schemas/Problem"})
    assert {"type", "title", "status", "detail", "instance", "request_id"} <= set(
        problem["properties"]
    )


async def test_the_document_is_the_same_on_every_request(client: httpx.AsyncClient) -> None:
    first = (await client.get("/openapi.json")).json()
    second = (await client.get("/openapi.json")).json()
    assert first == second


def _schema_keywords(node: Any) -> Iterator[str]:
    """Every keyword used by a schema object (property names excluded)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            if key in ("properties", "$defs", "schemas", "patternProperties"):
                for child in value.values():
                    yield from _schema_keywords(child)
            elif key not in ("example", "examples", "default", "enum", "const"):
                yield from _schema_keywords(value)
    elif isinstance(node, list):
        for child in node:
            yield from _schema_keywords(child)


async def test_schemas_use_json_schema_keywords_for_bounds(document: dict[str, Any]) -> None:
    # Pydantic's own names (`ge`, `le`, `decimal_places`) mean nothing to
    # client generators; the bounds must be `minimum` / `maximum`.
    keywords = set(_schema_keywords(document["components"]["schemas"]))
    assert not keywords & {"ge", "gt", "le", "lt", "decimal_places", "max_digits"}
    price = _resolve(document, {"$ref": "#/components/schemas/ProductCreate"})["properties"][
        "price"
    ]
    number = next(branch for branch in price["anyOf"] if branch.get("type") == "number")
    assert (number["minimum"], number["maximum"]) == (0, 1_000_000_000)


async def test_operation_ids_are_the_route_names(document: dict[str, Any]) -> None:
    ids = [operation["operationId"] for _, _, operation in _operations(document)]
    assert len(ids) == len(set(ids))
    assert {"get_product", "create_product", "patch_product", "register", "issue_token"} <= set(ids)


async def test_links_lead_from_a_create_to_the_operations_on_what_it_made(
    document: dict[str, Any],
) -> None:
    ids = {operation["operationId"] for _, _, operation in _operations(document)}
    created = document["paths"]["/api/v1/products"]["post"]["responses"]["201"]["links"]
    assert {link["operationId"] for link in created.values()} == {
        "get_product",
        "replace_product",
        "patch_product",
        "delete_product",
    }
    for link in created.values():
        assert link["parameters"]["product_id"] == "$response.body#/id"
    assert created["PatchProduct"]["parameters"]["header.If-Match"] == "$response.header.ETag"
    registered = document["paths"]["/api/v1/users"]["post"]["responses"]["201"]["links"]
    assert {link["operationId"] for link in registered.values()} == {
        "get_user",
        "update_user",
        "delete_user",
    }
    token = document["paths"]["/api/v1/auth/token"]["post"]["responses"]["200"]["links"]
    assert token["RefreshTokens"]["requestBody"] == {
        "refresh_token": "$response.body#/refresh_token"
    }
    # Every link names an operation the document has.
    for _, _, operation in _operations(document):
        for response in operation["responses"].values():
            for link in response.get("links", {}).values():
                assert link["operationId"] in ids
