"""The OpenAPI document is true and clean (API.md 1.1, General), and the repository keeps it.

docs/openapi.json is the document exactly as the service serves it, so a
change of the contract shows in review as a change of that file. Every
example in it validates against its own schema; operations that need no
credentials say so; it names its servers, licence and contact; every
operation is described. Redocly's and Spectral's own verdicts are in
test_linters.py.
"""

import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
from fastapi import FastAPI

from tests.conftest import PROJECT_ROOT

EXPORTED = PROJECT_ROOT / "docs" / "openapi.json"
REGENERATE = "python -m app openapi > docs/openapi.json"


def test_docs_openapi_json_is_what_the_service_serves(app: FastAPI) -> None:
    served = json.dumps(app.openapi(), indent=2, ensure_ascii=False) + "\n"
    assert EXPORTED.read_text() == served, f"docs/openapi.json is out of date: {REGENERATE}"


def _schema_examples(schema: Any, where: str) -> Iterator[tuple[str, Any, Any]]:
    """Examples a schema gives of itself (`example`, or `examples` as JSON Schema lists
    them), and those of the schemas inside it."""
    if not isinstance(schema, dict):
        return
    if "example" in schema:
        yield where, schema, schema["example"]
    if isinstance(schema.get("examples"), list):
        for index, example in enumerate(schema["examples"]):
            yield f"{where}/examples/{index}", schema, example
    for name, inner in schema.get("properties", {}).items():
        yield from _schema_examples(inner, f"{where}/properties/{name}")
    for key in ("items", "additionalProperties"):
        yield from _schema_examples(schema.get(key), f"{where}/{key}")
    for key in ("anyOf", "oneOf", "allOf"):
        for index, inner in enumerate(schema.get(key, [])):
            yield from _schema_examples(inner, f"{where}/{key}/{index}")


def examples(node: Any, where: str = "#") -> Iterator[tuple[str, Any, Any]]:
    """(where, schema, example) for every example in the document: of media types and
    parameters (against their schema), and of schemas themselves."""
    if isinstance(node, list):
        for index, value in enumerate(node):
            yield from examples(value, f"{where}/{index}")
        return
    if not isinstance(node, dict):
        return
    if where == "#/components/schemas":
        for name, schema in node.items():
            yield from _schema_examples(schema, f"{where}/{name}")
        return
    schema = node.get("schema")
    if isinstance(schema, dict):  # a media type or a parameter
        if "example" in node:
            yield where, schema, node["example"]
        for name, example in node.get("examples", {}).items():
            yield f"{where}/examples/{name}", schema, example["value"]
        yield from _schema_examples(schema, f"{where}/schema")
    for key, value in node.items():
        if key not in ("schema", "examples", "example"):
            yield from examples(value, f"{where}/{key}")


def test_every_example_validates_against_its_own_schema(app: FastAPI) -> None:
    document = app.openapi()
    components = {"components": document.get("components", {})}
    found = 0
    for where, schema, example in examples(document):
        # The components ride along, so that `#/components/...` references resolve.
        validator = jsonschema_rs.validator_for({**schema, **components}, validate_formats=True)
        errors = [error.message for error in validator.iter_errors(example)]
        assert not errors, (where, errors)
        found += 1
    assert found > 50, found


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, items in document["paths"].items():
        for method, operation in items.items():
            yield method.upper(), path, operation


def test_every_operation_is_described_and_says_what_credentials_it_needs(app: FastAPI) -> None:
    document = app.openapi()
    for method, path, operation in operations(document):
        assert operation.get("summary"), (method, path)
        assert operation.get("description"), (method, path)
        assert "security" in operation, (method, path)  # [] where none are needed
    public = {(m, p) for m, p, op in operations(document) if op["security"] == []}
    assert ("POST", "/api/v1/auth/token") in public
    assert ("GET", "/api/v1/products") in public
    assert ("GET", "/api/v1/users/me") not in public


def test_the_document_names_its_servers_licence_and_contact(app: FastAPI) -> None:
    document = app.openapi()
    assert document["openapi"].startswith("3.1.")
    assert document["servers"] == [
        {"url": "/", "description": "The server that serves this document"}
    ]
    assert document["info"]["license"]["identifier"] == "MIT"
    assert (PROJECT_ROOT / "LICENSE").read_text().startswith("MIT License")
    assert document["info"]["contact"]["name"]


def test_sort_values_have_names_for_generated_clients(app: FastAPI) -> None:
    document = app.openapi()
    [sort] = [
        p for p in document["paths"]["/api/v1/products"]["get"]["parameters"] if p["name"] == "sort"
    ]
    values, names = sort["schema"]["enum"], sort["schema"]["x-enum-varnames"]
    assert dict(zip(values, names, strict=True))["-price"] == "PRICE_DESC"
    assert len(set(names)) == len(values)
    assert all(name.isidentifier() for name in names)


def test_the_readme_links_only_to_files_the_repository_has() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#\s]+)", readme):
        if target.startswith(("http://", "https://")):
            continue
        path = (PROJECT_ROOT / target).resolve()
        assert path.is_relative_to(PROJECT_ROOT), f"{target} is outside the repository"
        assert path.exists(), target
