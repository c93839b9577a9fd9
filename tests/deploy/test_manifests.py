"""deploy/: the compose file and the Kubernetes manifests parse and say what production needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from bot.__main__ import _parser
from bot.settings import Settings, load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"


def k8s_docs() -> list[dict[str, Any]]:
    """The Kubernetes objects: what the kustomization applies, and the example Secret."""
    resources = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    docs: list[dict[str, Any]] = []
    for name in [*resources, "secret.example.yaml"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def find(kind: str, name: str) -> dict[str, Any]:
    for doc in k8s_docs():
        if doc.get("kind") == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name} in deploy/k8s")


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def cli_args(command: list[str]) -> Any:
    """The broker CLI accepts the command (`python -m bot …`), as the image would run it."""
    assert command[:3] == ["python", "-m", "bot"], command
    return _parser().parse_args(command[3:])


def secret_fields() -> set[str]:
    return {
        name.upper()
        for name, info in Settings.model_fields.items()
        if "SecretStr" in str(info.annotation) or info.annotation is SecretStr
    }


def test_every_manifest_parses_and_the_kustomization_lists_them() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")}
    # the Secret is created out of band; the adapter rules configure another chart
    assert on_disk - listed == {"kustomization.yaml", "secret.example.yaml", "prometheus-adapter-rules.yaml"}
    for doc in k8s_docs():
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], doc


@pytest.mark.parametrize(
    ("name", "port", "command"), [("broker-http", "http", "serve"), ("broker-worker", "health", "worker")]
)
def test_deployments_run_the_image_with_probes_resources_and_secrets(
    name: str, port: str, command: str
) -> None:
    deployment = find("Deployment", name)
    spec = deployment["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    c = container(deployment)
    assert c["image"] == "whatsapp-broker"  # rewritten to the registry by the kustomization
    args = cli_args(c["command"])
    assert args.command == command
    if command == "serve":
        assert args.no_worker, "the HTTP tier must not run turns: workers scale separately"
    else:
        assert args.health_port == 8081
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert port in ports
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
    sources = c["envFrom"]
    assert {"secretRef": {"name": "broker-secrets"}} in sources
    assert {"configMapRef": {"name": "broker-config"}} in sources
    requests = c["resources"]["requests"]
    assert requests["cpu"] and requests["memory"]
    assert c["resources"]["limits"]["memory"]
    assert spec["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_workers_get_time_to_finish_their_turns_on_shutdown() -> None:
    spec = find("Deployment", "broker-worker")["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] >= 30  # the worker's own grace is 20 s


def test_the_http_service_reaches_the_http_pods() -> None:
    service = find("Service", "broker-http")
    pods = find("Deployment", "broker-http")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pods.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_workers_autoscale_on_queue_depth() -> None:
    hpa = find("HorizontalPodAutoscaler", "broker-worker")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "broker-worker",
    }
    external = [m["external"] for m in hpa["spec"]["metrics"] if m["type"] == "External"]
    assert external and external[0]["metric"]["name"] == "broker_queue_depth"
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    rules = yaml.safe_load((K8S / "prometheus-adapter-rules.yaml").read_text())["rules"]["external"]
    assert rules[0]["name"]["as"] == "broker_queue_depth"


def test_config_and_secret_make_a_complete_configuration_with_secrets_only_in_the_secret() -> None:
    config = find("ConfigMap", "broker-config")["data"]
    secret = yaml.safe_load((K8S / "secret.example.yaml").read_text())["stringData"]
    assert not secret_fields() & set(config), "a secret setting sits in the ConfigMap"
    assert set(secret) <= secret_fields() | {"AGENT_API_TOKENS"}
    settings = load_settings(None, **{k.lower(): v for k, v in (config | secret).items()})
    assert settings.missing_for_serve() == []
    assert settings.redis_url == "redis://broker-redis:6379/0"


def test_redis_keeps_its_data() -> None:
    redis_set = find("StatefulSet", "broker-redis")
    args = container(redis_set)["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert redis_set["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


def test_compose_runs_redis_with_persistence_an_http_tier_and_workers() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])
    http, worker = services["http"], services["worker"]
    assert cli_args(http["command"]).no_worker
    assert cli_args(worker["command"]).command == "worker"
    for service in (http, worker):
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert (
            service["build"]["context"] == ".." and (DEPLOY / ".." / service["build"]["dockerfile"]).exists()
        )
        assert "healthcheck" in service
    assert worker["deploy"]["replicas"] >= 2
