"""Clients generated from the OpenAPI document, by tools nobody here wrote, run as users would.

openapi-python-client (Python) and @hey-api/openapi-ts (TypeScript, compiled
with `tsc --strict`, then run on Node) each generate a client from the
document the production command serves, and drive one scenario with it:
register, sign in, create, read, list with filters, PATCH with `If-Match`,
304, refresh through the token endpoint, delete. The TypeScript half needs
npm-tools (`npm ci --prefix npm-tools`); `.ci/run` installs them.
"""

import importlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import PROJECT_ROOT, Server

NPM_BIN = PROJECT_ROOT / "npm-tools" / "node_modules" / ".bin"
SCENARIO = PROJECT_ROOT / "tests" / "clients"
PASSWORD = "a generated passphrase"


@pytest.fixture
def document(server: Server, tmp_path: Path) -> Path:
    path = tmp_path / "openapi.json"
    path.write_bytes(httpx.get(f"{server.base_url}/openapi.json").content)
    return path


@pytest.fixture
def python_client(document: Path, tmp_path: Path) -> Iterator[Any]:
    """The package openapi-python-client generates, imported under a name of its own."""
    name = f"storefront_client_{uuid.uuid4().hex[:8]}"
    config = tmp_path / "generator.yaml"
    config.write_text("post_hooks: []\n")  # no formatter run: the code is used as generated
    generated = subprocess.run(
        [
            str(Path(sys.executable).with_name("openapi-python-client")),
            "generate",
            "--path",
            str(document),
            "--meta",
            "none",
            "--output-path",
            str(tmp_path / name),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert "Warning" not in generated.stdout, generated.stdout
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))
        for module in [m for m in sys.modules if m.split(".")[0] == name]:
            del sys.modules[module]


def test_a_generated_python_client_runs_the_scenario(server: Server, python_client: Any) -> None:
    package = python_client.__name__
    api = {
        name: importlib.import_module(f"{package}.api.{tag}.{name}")
        for tag, names in {
            "users": ("register", "read_me"),
            "auth": ("issue_token",),
            "products": (
                "create_product",
                "get_product",
                "list_products",
                "patch_product",
                "delete_product",
            ),
        }.items()
        for name in names
    }
    models = importlib.import_module(f"{package}.models")
    anonymous = python_client.Client(base_url=server.base_url)

    registered = api["register"].sync_detailed(
        client=anonymous,
        body=models.UserCreate(username="gen_user", email="gen@example.com", password=PASSWORD),
    )
    assert registered.status_code == 201
    assert registered.parsed.email_verified is False

    signed_in = api["issue_token"].sync(
        client=anonymous, body=models.TokenRequest(username="gen_user", password=PASSWORD)
    )
    assert isinstance(signed_in, models.TokenPairRead)
    user = python_client.AuthenticatedClient(base_url=server.base_url, token=signed_in.access_token)
    me = api["read_me"].sync(client=user)
    assert me.username == "gen_user"

    created = api["create_product"].sync_detailed(
        client=user, body=models.ProductCreate(name="Generated kettle", price="24.50")
    )
    assert created.status_code == 201
    product = created.parsed
    assert product.price == 24.5

    read = api["get_product"].sync_detailed(client=anonymous, product_id=product.id)
    assert read.headers["etag"] == '"1"'
    page = api["list_products"].sync(
        client=anonymous,
        q="kettle",
        min_price="20",
        sort=models.ListProductsSort.PRICE_DESC,
        limit=5,
    )
    assert [item.id for item in page.items] == [product.id]
    assert page.total == 1

    patched = api["patch_product"].sync_detailed(
        client=user,
        product_id=product.id,
        body=models.ProductPatch(price=21),
        if_match=read.headers["etag"],
    )
    assert patched.status_code == 200
    assert patched.parsed.version == 2
    stale = api["patch_product"].sync_detailed(
        client=user, product_id=product.id, body=models.ProductPatch(price=1), if_match='"1"'
    )
    assert stale.status_code == 412
    not_modified = api["get_product"].sync_detailed(
        client=anonymous, product_id=product.id, if_none_match=patched.headers["etag"]
    )
    assert not_modified.status_code == 304

    refreshed = api["issue_token"].sync(
        client=anonymous,
        body=models.TokenRequest(grant_type="refresh_token", refresh_token=signed_in.refresh_token),
    )
    assert isinstance(refreshed, models.TokenPairRead)
    assert refreshed.refresh_token != signed_in.refresh_token
    fresh = python_client.AuthenticatedClient(
        base_url=server.base_url, token=refreshed.access_token
    )
    deleted = api["delete_product"].sync_detailed(client=fresh, product_id=product.id)
    assert deleted.status_code == 204
    gone = api["get_product"].sync_detailed(client=anonymous, product_id=product.id)
    assert gone.status_code == 404
    assert gone.parsed.status == 404  # the problem, parsed as the document declares it


@pytest.mark.skipif(
    not NPM_BIN.exists(), reason="npm-tools are not installed (npm ci --prefix npm-tools)"
)
def test_a_generated_typescript_client_compiles_strictly_and_runs(
    server: Server, document: Path, tmp_path: Path
) -> None:
    work = tmp_path / "ts"
    work.mkdir()
    for name in ("scenario.ts", "tsconfig.json"):
        shutil.copy(SCENARIO / name, work / name)

    def run(*command: str, **environment: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command,
            cwd=work,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            env={**os.environ, **environment},
        )

    generated = run(
        str(NPM_BIN / "openapi-ts"),
        "--input",
        str(document),
        "--output",
        "client",
        "--client",
        "@hey-api/client-fetch",
        "--no-log-file",
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    compiled = run(str(NPM_BIN / "tsc"), "--project", "tsconfig.json")
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    ran = run("node", "build/scenario.js", BASE_URL=server.base_url)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "typescript scenario passed" in ran.stdout
