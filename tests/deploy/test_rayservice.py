"""The KubeRay RayService (deploy/ray/rayservice.yaml) and the Ray image (deploy/ray/Dockerfile).

No Kubernetes runs here, so the manifest is checked three ways: against KubeRay's own schema (its CRD, trimmed in
tests/deploy/schemas/) with strict field validation; its pod templates against the Kubernetes schema; and its
serveConfigV2 against Ray Serve's schema and the shipped serve.yaml. Then the image runs it on a real Docker engine
as KubeRay would: a head and a worker container started with the manifest's `ray start` parameters, environment,
mounts, user and read-only root, the serve config submitted to the head's dashboard API (what KubeRay does), the
probes' endpoints polled, and /classify through both nodes' proxies compared with the service in this process.
"""

import copy
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kubernetes_validate
import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient

from service.app import create_app
from tests.deploy.figures import FIGURES
from tests.deploy.project import ROOT
from tests.deploy.test_kubernetes import KUBERNETES_VERSION
from tests.service.apps import make_settings
from training.data import load_dataset

MANIFEST = yaml.safe_load((ROOT / "deploy" / "ray" / "rayservice.yaml").read_text())
SERVE_YAML = yaml.safe_load((ROOT / "deploy" / "ray" / "serve.yaml").read_text())
SCHEMA = json.loads((ROOT / "tests" / "deploy" / "schemas" / "rayservice-v1.json").read_text())
DOCKERFILE = (ROOT / "deploy" / "ray" / "Dockerfile").read_text()
SPEC = MANIFEST["spec"]
CLUSTER = SPEC["rayClusterConfig"]
GROUPS = {"head": CLUSTER["headGroupSpec"], **{g["groupName"]: g for g in CLUSTER["workerGroupSpecs"]}}
RAW = {"Content-Type": "application/octet-stream"}


def schema_errors(manifest: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(SCHEMA)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]


def container(group: dict[str, Any]) -> dict[str, Any]:
    return dict(group["template"]["spec"]["containers"][0])  # KubeRay runs Ray in a pod's first container


def serve_config() -> dict[str, Any]:
    return dict(yaml.safe_load(SPEC["serveConfigV2"]))


def deployment() -> dict[str, Any]:
    return dict(serve_config()["applications"][0]["deployments"][0])


def test_the_manifest_is_valid_against_kuberays_schema() -> None:
    assert MANIFEST["apiVersion"] == "ray.io/v1" and MANIFEST["kind"] == "RayService"
    assert schema_errors(MANIFEST) == []


@pytest.mark.parametrize(
    ("where", "field"),
    [((), "replica"), (("spec",), "serveConfig"), (("spec", "rayClusterConfig"), "workerGroupSpec")],
)
def test_the_schema_check_rejects_a_misspelt_field(where: tuple[str, ...], field: str) -> None:
    manifest = copy.deepcopy(MANIFEST)
    node = manifest
    for key in where:
        node = node[key]
    node[field] = {}
    assert any("Additional properties are not allowed" in e for e in schema_errors(manifest))


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_pod_templates_are_valid_against_the_kubernetes_schema(name: str) -> None:
    template = GROUPS[name]["template"]
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"sae-serve-{name}"}, "template": template},
        KUBERNETES_VERSION,
        strict=True,
    )
    wrapped = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": MANIFEST["metadata"]}
    kubernetes_validate.validate(wrapped, KUBERNETES_VERSION, strict=True)


def test_kuberays_own_rules_hold() -> None:
    """What KubeRay's validation (controllers/ray/utils/validation.go) refuses beyond its schema."""
    name = MANIFEST["metadata"]["name"]
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 47
    assert "name" not in CLUSTER["headGroupSpec"].get("headService", {}).get("metadata", {})
    for group in GROUPS.values():
        assert group["template"]["spec"]["containers"]
    for group in CLUSTER["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert len(GROUPS) == 1 + len(CLUSTER["workerGroupSpecs"])  # worker group names are distinct


def test_the_serve_config_is_the_shipped_serve_yaml_and_valid_for_ray_serve() -> None:
    from ray.serve.schema import ServeDeploySchema

    assert serve_config() == SERVE_YAML
    ServeDeploySchema.model_validate(serve_config())
    wrong = serve_config()
    wrong["applications"][0]["deployments"][0]["max_queued_requests"] = "many"
    with pytest.raises(ValueError, match="max_queued_requests"):
        ServeDeploySchema.model_validate(wrong)


def test_the_cluster_fits_the_serve_config() -> None:
    lock = (ROOT / "requirements-ray.lock").read_text()
    assert CLUSTER["rayVersion"] == re.search(r"^ray==([\d.]+)", lock, re.M).group(1)  # type: ignore[union-attr]
    served = deployment()
    (workers,) = CLUSTER["workerGroupSpecs"]
    # One replica a worker node: as many workers at most as replicas, each with the CPUs a replica asks for.
    assert served["max_replicas_per_node"] == 1
    assert workers["maxReplicas"] == served["autoscaling_config"]["max_replicas"]
    assert workers["minReplicas"] == served["autoscaling_config"]["min_replicas"]
    assert float(workers["rayStartParams"]["num-cpus"]) == served["ray_actor_options"]["num_cpus"]
    assert CLUSTER["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # no replica beside the control plane
    artifacts = serve_config()["applications"][0]["runtime_env"]["env_vars"]["SAE_ARTIFACTS_DIR"]
    claim = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "artifacts-pvc.yaml").read_text())["metadata"]["name"]
    for group in GROUPS.values():
        pod, ray = group["template"]["spec"], container(group)
        assert ray["image"] == "sae-serve-ray:latest"
        assert pod["securityContext"]["runAsUser"] == 10001 and ray["securityContext"]["readOnlyRootFilesystem"]
        mounts = {m["name"]: m for m in ray["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert mounts["artifacts"]["mountPath"] == artifacts and mounts["artifacts"]["readOnly"] is True
        assert volumes["artifacts"]["persistentVolumeClaim"]["claimName"] == claim
        assert "emptyDir" in volumes[mounts["tmp"]["name"]] and mounts["tmp"]["mountPath"] == "/tmp"
        env = {e["name"]: e["value"] for e in ray["env"]}
        assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
        ports = {p["name"]: p["containerPort"] for p in ray["ports"]}
        assert ports["serve"] == serve_config()["http_options"]["port"]
        for probe in ("readinessProbe", "livenessProbe"):
            port = ray[probe]["httpGet"]["port"]
            assert isinstance(port, int) or port in ports
    head_ports = {p["containerPort"] for p in container(GROUPS["head"])["ports"]}
    assert {6379, 8265, 10001, 8000} <= head_ports


def test_the_ray_image_is_the_serving_image_with_the_ray_lock() -> None:
    assert re.search(r"^ARG SERVE_IMAGE=sae-serve:latest$", DOCKERFILE, re.M)
    assert re.search(r"^FROM \$\{SERVE_IMAGE\}$", DOCKERFILE, re.M)
    assert "pip install --require-hashes -r /tmp/requirements-ray.lock" in DOCKERFILE
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "requirements-ray.lock" not in ignored and "deploy" not in ignored


# --- the image, run as KubeRay runs it ---------------------------------------------------------------------------


@dataclass
class Node:
    name: str
    address: str
    group: dict[str, Any]

    def url(self, port: int | str) -> str:
        ports = {p["name"]: p["containerPort"] for p in container(self.group)["ports"]}
        return f"http://{self.address}:{ports.get(port, port)}"


def docker(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    result = subprocess.run(["docker", *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert result.returncode == 0, f"docker {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def ray_start(group: dict[str, Any], *first: str) -> list[str]:
    """The `ray start` KubeRay runs for a group: its rayStartParams as flags, blocking."""
    params = [f"--{key}={value}" for key, value in group["rayStartParams"].items()]
    return ["ray", "start", *first, *params, "--block"]


def docker_size(quantity: str) -> str:
    """A Kubernetes memory quantity (3Gi, 512Mi) as docker's (3g, 512m: both binary units)."""
    number, unit = re.fullmatch(r"(\d+)(Gi|Mi)", quantity).groups()  # type: ignore[union-attr]
    return number + unit[0].lower()


def run_node(env: dict[str, str], name: str, group: dict[str, Any], artifacts: Path, command: list[str]) -> Node:
    """A container as the pod template describes it: its user, read-only root, writable /tmp, shared memory, the
    artifacts read-only at their mount path, its environment and memory limit."""
    pod, ray = group["template"]["spec"], container(group)
    mount = next(m for m in ray["volumeMounts"] if m["name"] == "artifacts")
    argv = ["run", "--detach", "--name", name, "--user", str(pod["securityContext"]["runAsUser"]), "--read-only"]
    memory = docker_size(ray["resources"]["limits"]["memory"])
    argv += ["--tmpfs", "/tmp:rw,exec,mode=1777", "--shm-size", "1g", "--memory", memory]
    argv += ["--volume", f"{artifacts}:{mount['mountPath']}:ro"]
    for variable in ray["env"]:
        argv += ["--env", f"{variable['name']}={variable['value']}"]
    docker(env, "rm", "--force", name)
    docker(env, *argv, ray["image"], *command)
    address = json.loads(docker(env, "inspect", name))[0]["NetworkSettings"]["IPAddress"]
    return Node(name, address, group)


def wait_for(what: str, check: Any, timeout: float) -> float:
    started = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        if time.monotonic() - started > timeout:
            pytest.fail(f"not within {timeout:.0f} s: {what}")
        time.sleep(1)


def probe_passes(node: Node, probe: str) -> bool:
    get = container(node.group)[probe]["httpGet"]
    return httpx.get(node.url(get["port"]) + get["path"], timeout=5).status_code == 200


def application_status(head: Node) -> str:
    answer = httpx.get(head.url("dashboard") + "/api/serve/applications/", timeout=10).json()
    return str(answer.get("applications", {}).get("sae-serve", {}).get("status", "absent"))


def submit(head: Node, config: dict[str, Any]) -> None:
    """What KubeRay does with serveConfigV2: PUT it to the head's dashboard."""
    answer = httpx.put(head.url("dashboard") + "/api/serve/applications/", json=config, timeout=60)
    assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the trained models (make test trains them first), readable by the pods' user."""
    trained = ROOT / "artifacts"
    if not all((trained / name / "1" / "card.json").exists() for name in ("mnist", "fashion-mnist")):
        pytest.fail(f"no trained models in {trained}; run `make models` (make test does) first")
    root = tmp_path_factory.mktemp("rayservice")
    copy_of = root / "artifacts"
    for name in ("mnist", "fashion-mnist"):
        shutil.copytree(trained / name / "1", copy_of / name / "1")
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
    return copy_of


@pytest.fixture(scope="module")
def nodes(docker_env: dict[str, str], artifacts: Path) -> Iterator[tuple[Node, Node]]:
    started = time.monotonic()
    docker(docker_env, "build", "--target", "serve", "--tag", "sae-serve:latest", ".", timeout=1800)
    docker(docker_env, "build", "--file", "deploy/ray/Dockerfile", "--tag", "sae-serve-ray:latest", ".", timeout=1800)
    FIGURES["Ray image build (layer cache as left by earlier runs)"] = f"{time.monotonic() - started:.0f} s"
    size = int(docker(docker_env, "image", "inspect", "sae-serve-ray:latest", "--format", "{{.Size}}"))
    FIGURES["image sae-serve-ray:latest"] = f"{size / 1e9:.2f} GB"
    names = ("sae-rayservice-head", "sae-rayservice-worker")
    try:
        head_group, (worker_group,) = CLUSTER["headGroupSpec"], CLUSTER["workerGroupSpecs"]
        head = run_node(docker_env, names[0], head_group, artifacts, ray_start(head_group, "--head"))
        wait_for("the head's GCS (its readiness probe)", lambda: probe_passes(head, "readinessProbe"), 120)
        worker = run_node(
            docker_env, names[1], worker_group, artifacts, ray_start(worker_group, f"--address={head.address}:6379")
        )
        started = time.monotonic()
        submit(head, serve_config())
        wait_for("the application RUNNING", lambda: application_status(head) == "RUNNING", 300)
        FIGURES["RayService config submitted to RUNNING"] = f"{time.monotonic() - started:.0f} s"
        yield head, worker
    finally:
        for name in names:
            subprocess.run(["docker", "logs", "--tail", "30", name], env=docker_env, check=False)
            subprocess.run(["docker", "rm", "--force", name], env=docker_env, capture_output=True, check=False)


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_dataset("mnist", ROOT / "data").test_images.numpy()[:64]


@pytest.mark.slow
@pytest.mark.docker
def test_every_probe_of_the_manifest_passes_once_serving(nodes: tuple[Node, Node]) -> None:
    for node in nodes:
        for probe in ("readinessProbe", "livenessProbe"):
            wait_for(f"{node.name}'s {probe}", lambda node=node, probe=probe: probe_passes(node, probe), 60)


@pytest.mark.slow
@pytest.mark.docker
def test_both_nodes_proxies_answer_as_the_service_in_this_process(
    nodes: tuple[Node, Node], artifacts: Path, digits: np.ndarray
) -> None:
    with TestClient(create_app(make_settings(artifacts))) as alone:
        expected = alone.post("/classify?top_k=1", content=digits.tobytes(), headers=RAW).json()["predictions"]
    for node in nodes:  # the head's proxy routes to the worker's replica; the worker's proxy to its own
        answer = httpx.post(node.url("serve") + "/classify?top_k=1", content=digits.tobytes(), headers=RAW, timeout=60)
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        assert [p["label"] for p in predictions] == [p["label"] for p in expected]
        for got, want in zip(predictions, expected, strict=True):
            np.testing.assert_allclose(
                list(got["probabilities"].values()), list(want["probabilities"].values()), atol=1e-5
            )


@pytest.mark.slow
@pytest.mark.docker
def test_a_new_version_in_the_volume_is_served_after_a_new_generation(
    nodes: tuple[Node, Node], artifacts: Path
) -> None:
    """The manifest's way to roll out a model: the version in the volume, `generation` raised, applied again."""
    head, worker = nodes
    shutil.copytree(artifacts / "mnist" / "1", artifacts / "mnist" / "2")
    subprocess.run(["chmod", "-R", "a+rX", str(artifacts)], check=True)
    config = serve_config()
    config["applications"][0]["deployments"][0]["user_config"]["generation"] += 1
    submit(head, config)

    def serves_version_2() -> bool:
        models = httpx.get(worker.url("serve") + "/models", timeout=10).json()["models"]
        return any(m["name"] == "mnist" and str(m["version"]) == "2" for m in models)

    wait_for("version 2 of mnist served", serves_version_2, 120)
    assert application_status(head) == "RUNNING"
