"""The Kubernetes manifests: valid against the Kubernetes schemas, and consistent with the app and each other."""

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.project import ROUTES, SCRIPTS, check_command, setting_names

FOLDER = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
MANIFESTS = {p.name: yaml.safe_load(p.read_text()) for p in sorted(FOLDER.glob("*.yaml"))}
KUBERNETES_VERSION = "1.33.0"


def containers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    spec = manifest["spec"]["template"]["spec"]
    return list(spec["containers"])


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_manifest_is_valid_against_the_kubernetes_schema(name: str) -> None:
    kubernetes_validate.validate(MANIFESTS[name], KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("name", ["deployment.yaml", "deployment-gpu.yaml", "train-job.yaml"])
def test_workloads_run_real_commands_with_real_settings(name: str) -> None:
    for container in containers(MANIFESTS[name]):
        check_command(container["command"])
        assert container["command"][0] in SCRIPTS or container["command"][0] == "sh"
        names = {e["name"] for e in container.get("env", [])}
        assert names <= setting_names(), names - setting_names()


@pytest.mark.parametrize("name", ["deployment.yaml", "deployment-gpu.yaml"])
def test_probes_and_ports_match_the_app(name: str) -> None:
    manifest = MANIFESTS[name]
    (container,) = containers(manifest)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["ports"] == [{"name": "http", "containerPort": int(env["SAE_PORT"])}]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready" in ROUTES
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live" in ROUTES
    assert manifest["spec"]["selector"]["matchLabels"] == manifest["spec"]["template"]["metadata"]["labels"]
    grace = manifest["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > int(env.get("SAE_GRACEFUL_SHUTDOWN_S") or 20)
    if name == "deployment-gpu.yaml":
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1 and env["SAE_DEVICE"] == "cuda"


def test_service_and_autoscaler_point_at_the_deployment() -> None:
    deployment, service, hpa = MANIFESTS["deployment.yaml"], MANIFESTS["service.yaml"], MANIFESTS["hpa.yaml"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sae-serve"}
    claim = MANIFESTS["artifacts-pvc.yaml"]["metadata"]["name"]
    for name in ("deployment.yaml", "deployment-gpu.yaml", "train-job.yaml"):
        volumes = MANIFESTS[name]["spec"]["template"]["spec"]["volumes"]
        assert any(v.get("persistentVolumeClaim", {}).get("claimName") == claim for v in volumes)


def artifacts_dir(container: dict[str, Any]) -> str:
    return str(next(e["value"] for e in container["env"] if e["name"] == "SAE_ARTIFACTS_DIR"))


def test_the_job_trains_into_the_volume_the_deployments_serve_from() -> None:
    (train,) = containers(MANIFESTS["train-job.yaml"])
    assert train["image"].startswith("sae-serve-train:")  # the image with the training extra
    mounts = {m["name"]: m["mountPath"] for m in train["volumeMounts"]}
    assert artifacts_dir(train) == mounts["artifacts"]
    for name in ("deployment.yaml", "deployment-gpu.yaml"):
        (api,) = containers(MANIFESTS[name])
        assert api["image"].startswith("sae-serve:")
        served = next(m for m in api["volumeMounts"] if m["name"] == "artifacts")
        assert artifacts_dir(api) == served["mountPath"] == mounts["artifacts"] and served["readOnly"] is True


@pytest.mark.parametrize("name", ["deployment.yaml", "deployment-gpu.yaml", "train-job.yaml"])
def test_containers_run_read_only_with_a_writable_tmp(name: str) -> None:
    spec = MANIFESTS[name]["spec"]["template"]["spec"]
    (container,) = containers(MANIFESTS[name])
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsUser"] == 10001
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert any(v["name"] == tmp["name"] and "emptyDir" in v for v in spec["volumes"])
