"""Property-based testing of the whole API from its OpenAPI document (Schemathesis).

Runs the Schemathesis CLI with every check it has against the production
command on PostgreSQL, once signed in as a normal user and once as an admin:
examples, coverage, fuzzing, and the stateful phase that follows the
document's links from create to read, update and delete. A fixed seed and a
bounded number of examples keep it reproducible and within minutes; the
document declares every response a route can give, so the checks pass
because the document is true.
"""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.conftest import PROJECT_ROOT, Server, server_environment, start_server

SEED = "20261121"
EXAMPLES_PER_OPERATION = os.environ.get("FUZZ_EXAMPLES", "25")
CONFIG = Path(__file__).with_name("schemathesis.toml")
ARTIFACTS = PROJECT_ROOT / "test-artifacts"


@pytest.fixture
def fuzz_target(
    backend: str, database_url: str, tmp_path: Path
) -> Iterator[tuple[Server, dict[str, str]]]:
    if backend != "postgresql":
        pytest.skip("the fuzz run targets the production setup: PostgreSQL")
    environment = server_environment(database_url, tmp_path / "data")
    running = start_server(environment, tmp_path / "server.log")
    yield running, environment
    running.stop()


@pytest.mark.timeout(600)  # a few minutes by design; the suite's default is 2
@pytest.mark.parametrize("role", ["user", "admin"])
def test_schemathesis_finds_nothing(fuzz_target: tuple[Server, dict[str, str]], role: str) -> None:
    server, environment = fuzz_target
    report_dir = ARTIFACTS / f"schemathesis-{role}"
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        f"{server.base_url}/openapi.json",
        "--checks",
        "all",
        "--seed",
        SEED,
        "--max-examples",
        EXAMPLES_PER_OPERATION,
        "--generation-deterministic",
        "--report",
        "junit",
        "--report-dir",
        str(report_dir),
    ]
    result = subprocess.run(
        command,
        cwd=PROJECT_ROOT,
        env={
            **environment,
            "PYTHONPATH": str(PROJECT_ROOT),
            "SCHEMATHESIS_HOOKS": "tests.fuzz.hooks",
            "FUZZ_BASE_URL": server.base_url,
            "FUZZ_ROLE": role,
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "output.txt").write_text(output)
    assert result.returncode == 0, output[-12000:]
    assert "No issues found" in output or " passed" in output, output[-4000:]
