"""The KubeRay RayService (deploy/ray/rayservice.yaml) and the Ray image (deploy/ray/Dockerfile).

No Kubernetes runs here, so the manifest is checked three ways: against KubeRay's own schema (its CRD, trimmed in
tests/deploy/schemas/) with strict field validation; its pod templates against the Kubernetes schema; and its
serveConfigV2 against Ray Serve's schema and the shipped serve.yaml. Then the image runs it on a real Docker engine,
each container as KubeRay 1.7.0 would make the pod (its `ray start` command, environment and probes, from
pod.go; the template's user, read-only root, capabilities, memory and mounts): the serve config submitted to the
head's dashboard API (what KubeRay does), every probe polled with its timeout, and /classify through both nodes'
proxies compared with the service in this process. KubeRay's autoscaler sidecar and its Services are not run.
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

from tests.deploy.figures import FIGURES
from tests.deploy.project import ROOT, answers_as_alone
from tests.deploy.test_kubernetes import KUBERNETES_VERSION
from training.data import load_dataset

MANIFEST = yaml.safe_load((ROOT / "deploy" / "ray" / "rayservice.yaml").read_text())
SERVE_YAML = yaml.safe_load((ROOT / "deploy" / "ray" / "serve.yaml").read_text())
SCHEMA = json.loads((ROOT / "tests" / "deploy" / "schemas" / "rayservice-v1.json").read_text())
DOCKERFILE = (ROOT / "deploy" / "ray" / "Dockerfile").read_text()
SPEC = MANIFEST["spec"]
CLUSTER = SPEC["rayClusterConfig"]
GROUPS = {"head": CLUSTER["headGroupSpec"], **{g["groupName"]: g for g in CLUSTER["workerGroupSpecs"]}}


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
        assert ray["imagePullPolicy"] == "IfNotPresent"  # a :latest tag would default to Always
        assert ray["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    head_ports = {p["containerPort"] for p in container(GROUPS["head"])["ports"]}
    assert {6379, 8265, 8000} <= head_ports
    assert CLUSTER["autoscalerOptions"]["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_ray_image_is_the_serving_image_with_the_ray_lock() -> None:
    assert re.search(r"^ARG SERVE_IMAGE=sae-serve:latest$", DOCKERFILE, re.M)
    assert re.search(r"^FROM \$\{SERVE_IMAGE\}$", DOCKERFILE, re.M)
    assert "pip install --require-hashes -r /tmp/requirements-ray.lock" in DOCKERFILE
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "requirements-ray.lock" not in ignored and "deploy" not in ignored


# --- the image, run as KubeRay runs it ---------------------------------------------------------------------------
# What KubeRay 1.7.0 adds to a pod template (ray-operator/controllers/ray/common/pod.go): the `ray start` command
# (setMissingRayStartParams, generateRayStartCommand, convertParamMap), environment variables (setContainerEnvVars)
# and the probes it fills in where the template has none (initLivenessAndReadinessProbe, for Ray 2.53 and later).
# Not emulated: the autoscaler sidecar, the init container waiting for the GCS, and the Services.

AGENT_PORT = 52365  # utils.DefaultDashboardAgentListenPort


def kuberay_params(group: dict[str, Any], head: str | None) -> dict[str, str]:
    """The group's rayStartParams as KubeRay completes them; `head` is the head's address for a worker."""
    params = dict(group["rayStartParams"])
    limits = container(group)["resources"].get("limits", {})
    if head is None:
        params.setdefault("dashboard-host", "0.0.0.0")
        if CLUSTER.get("enableInTreeAutoscaling"):
            params["no-monitor"] = "true"  # the autoscaler sidecar replaces Ray's monitor
    else:
        params.setdefault("address", f"{head}:6379")
    params.setdefault("metrics-export-port", "8080")
    params["block"] = "true"
    params.setdefault("dashboard-agent-listen-port", str(AGENT_PORT))
    if "memory" in limits:
        params.setdefault("memory", str(quantity_bytes(limits["memory"])))
    return params


def kuberay_command(group: dict[str, Any], head: str | None) -> list[str]:
    params = kuberay_params(group, head)
    flags = [f"--{k}" if params[k].lower() == "true" else f"--{k}={params[k]}" for k in sorted(params)]
    start = " ".join(["ray", "start", *(["--head"] if head is None else []), *flags])
    return ["/bin/bash", "-c", "--", f"ulimit -n ${{RAY_START_ULIMIT_OPEN_FILES:-65536}}; {start}"]


def kuberay_env(group: dict[str, Any], head: str | None) -> dict[str, str]:
    env = {
        "RAY_PORT": "6379",
        "RAY_TIMEOUT_MS_TASK_WAIT_FOR_DEATH_INFO": "0",  # these three for RayService clusters only
        "RAY_GCS_SERVER_REQUEST_TIMEOUT_SECONDS": "5",
        "RAY_SERVE_KV_TIMEOUT_S": "5",
        "RAY_ADDRESS": f"{head or '127.0.0.1'}:6379",
        "RAY_USAGE_STATS_KUBERAY_IN_USE": "1",
        "RAY_DASHBOARD_ENABLE_K8S_DISK_USAGE": "1",
    }
    return {**env, **{e["name"]: e["value"] for e in container(group)["env"]}}  # the template's own win


def kuberay_probes(group: dict[str, Any], worker: bool) -> dict[str, dict[str, Any]]:
    """The container's readiness and liveness probes once KubeRay has filled in those the template lacks."""
    ray = container(group)
    default = {"httpGet": {"path": "/api/healthz", "port": AGENT_PORT}, "timeoutSeconds": 2 if worker else 5}
    probes = {}
    for probe in ("readinessProbe", "livenessProbe"):
        if probe in ray:
            probes[probe] = ray[probe]
        elif probe == "readinessProbe" and worker:
            probes[probe] = {"exec": "wget ... -/healthz"}  # a RayService worker's default: wget, absent here
        else:
            probes[probe] = default
    return probes


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity in binary units (3Gi, 512Mi) in bytes."""
    number, unit = re.fullmatch(r"(\d+)(Gi|Mi)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * {"Gi": 1 << 30, "Mi": 1 << 20}[unit]


def test_every_probe_kuberay_runs_is_http_and_the_workers_readiness_follows_the_proxy() -> None:
    """The image has no wget: no probe may fall back to KubeRay's wget check (tested below on the image)."""
    for name, group in GROUPS.items():
        for probe, spec in kuberay_probes(group, worker=name != "head").items():
            assert "httpGet" in spec, f"{name} {probe}: {spec}"
            port = spec["httpGet"]["port"]
            named = {p["name"] for p in container(group)["ports"]}
            assert port == AGENT_PORT or port in named, f"{name} {probe}: no port {port!r}"
    (workers,) = CLUSTER["workerGroupSpecs"]
    readiness = container(workers)["readinessProbe"]
    assert readiness["httpGet"] == {"path": "/-/healthz", "port": "serve"}
    assert readiness["timeoutSeconds"] == 2 and readiness["failureThreshold"] == 1  # KubeRay's own worker check's


def test_kuberay_would_start_ray_with_the_manifests_parameters() -> None:
    head, (workers,) = CLUSTER["headGroupSpec"], CLUSTER["workerGroupSpecs"]
    command = kuberay_command(head, None)[-1]
    assert "ray start --head --block --dashboard-agent-listen-port=52365 --dashboard-host=0.0.0.0" in command
    assert "--memory=3221225472" in command and "--no-monitor" in command and "--num-cpus=0" in command
    assert "--address=10.0.0.9:6379" in kuberay_command(workers, "10.0.0.9")[-1]
    assert "--num-cpus=1" in kuberay_command(workers, "10.0.0.9")[-1]


@dataclass
class Node:
    name: str
    address: str
    group: dict[str, Any]
    worker: bool

    def url(self, port: int | str) -> str:
        ports = {p["name"]: p["containerPort"] for p in container(self.group)["ports"]}
        return f"http://{self.address}:{ports.get(port, port)}"


def docker(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    result = subprocess.run(["docker", *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert result.returncode == 0, f"docker {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def run_node(env: dict[str, str], name: str, group: dict[str, Any], artifacts: Path, head: str | None) -> Node:
    """A container as the pod KubeRay makes of the template: its command and environment, the template's user,
    read-only root, dropped capabilities, writable /tmp, shared memory of the template's size, memory limit, and
    the artifacts read-only at their mount path."""
    pod, ray = group["template"]["spec"], container(group)
    mounts = {m["name"]: m["mountPath"] for m in ray["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    shm = next(volumes[n]["emptyDir"]["sizeLimit"] for n, path in mounts.items() if path == "/dev/shm")
    argv = ["run", "--detach", "--name", name, "--user", str(pod["securityContext"]["runAsUser"]), "--read-only"]
    argv += ["--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    argv += ["--tmpfs", "/tmp:rw,exec,mode=1777", "--shm-size", str(quantity_bytes(shm))]
    argv += ["--memory", str(quantity_bytes(ray["resources"]["limits"]["memory"]))]
    argv += ["--volume", f"{artifacts}:{mounts['artifacts']}:ro"]
    for variable, value in kuberay_env(group, head).items():
        argv += ["--env", f"{variable}={value}"]
    docker(env, "rm", "--force", name)
    docker(env, *argv, "--entrypoint", "", ray["image"], *kuberay_command(group, head))
    address = json.loads(docker(env, "inspect", name))[0]["NetworkSettings"]["IPAddress"]
    return Node(name, address, group, worker=head is not None)


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
    """The probe as the kubelet runs it: a 2xx or 3xx within its timeout (1 s when the probe sets none)."""
    spec = kuberay_probes(node.group, node.worker)[probe]
    get = spec["httpGet"]
    answer = httpx.get(node.url(get["port"]) + get["path"], timeout=spec.get("timeoutSeconds", 1))
    return 200 <= answer.status_code < 400


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
        head = run_node(docker_env, names[0], head_group, artifacts, None)
        wait_for("the head ready (its readiness probe)", lambda: probe_passes(head, "readinessProbe"), 120)
        worker = run_node(docker_env, names[1], worker_group, artifacts, head.address)
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
def test_every_probe_kuberay_would_run_passes_once_serving_and_the_image_has_no_wget(
    docker_env: dict[str, str], nodes: tuple[Node, Node]
) -> None:
    for node in nodes:
        for probe in ("readinessProbe", "livenessProbe"):
            wait_for(f"{node.name}'s {probe}", lambda node=node, probe=probe: probe_passes(node, probe), 60)
    # Why the worker's readiness probe is the manifest's: KubeRay's default would call wget.
    found = subprocess.run(
        ["docker", "exec", nodes[1].name, "sh", "-c", "command -v wget"], env=docker_env, capture_output=True
    )
    assert found.returncode != 0


@pytest.mark.slow
@pytest.mark.docker
def test_both_nodes_proxies_answer_as_the_service_in_this_process(
    nodes: tuple[Node, Node], artifacts: Path, digits: np.ndarray
) -> None:
    # The head's proxy routes to the worker's replica; the worker's proxy to its own.
    answers_as_alone(artifacts, digits, [node.url("serve") for node in nodes], atol=1e-5)


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
