"""The OpenAPI document against widely used linters (API.md 1.1: no error from either).

Redocly CLI with its recommended rules and Spectral with `spectral:oas`, at
the versions pinned in npm-tools/package.json, installed there by
`npm ci --prefix npm-tools` (`.ci/run` does it). Skipped when they are not
installed, like the browser tests without Chromium.
"""

import json
import subprocess
from pathlib import Path

import pytest
from fastapi import FastAPI

from tests.conftest import PROJECT_ROOT

TOOLS = PROJECT_ROOT / "npm-tools"
BIN = TOOLS / "node_modules" / ".bin"

pytestmark = pytest.mark.skipif(
    not BIN.exists(), reason="npm-tools are not installed (npm ci --prefix npm-tools)"
)


def served_document(app: FastAPI, directory: Path) -> Path:
    path = directory / "openapi.json"
    path.write_text(json.dumps(app.openapi()))
    return path


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=TOOLS, capture_output=True, text=True, timeout=180, check=False
    )


def test_redocly_recommended_rules_find_no_error(app: FastAPI, tmp_path: Path) -> None:
    document = served_document(app, tmp_path)
    result = run(
        str(BIN / "redocly"), "lint", str(document), "--config", "redocly.yaml", "--format=json"
    )
    report = json.loads(result.stdout)
    errors = [p for p in report["problems"] if p["severity"] == "error"]
    assert errors == [], errors
    assert result.returncode == 0, result.stderr[-2000:]
    warned = {(p["ruleId"], p["location"][0]["pointer"]) for p in report["problems"]}
    # Only the warnings redocly.yaml explains: the probes answer no client error.
    assert {rule for rule, _ in warned} <= {"operation-4xx-response"}, warned


def test_spectral_oas_rules_find_nothing(app: FastAPI, tmp_path: Path) -> None:
    document = served_document(app, tmp_path)
    report = tmp_path / "spectral.json"
    result = run(
        str(BIN / "spectral"),
        "lint",
        str(document),
        "--ruleset",
        ".spectral.yaml",
        "--format",
        "json",
        "--output",
        str(report),
        "--fail-severity",
        "hint",
    )
    assert json.loads(report.read_text()) == []
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
