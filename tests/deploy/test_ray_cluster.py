"""sae-serve on a real three-node Ray Serve cluster: each node a `ray start` in a network namespace of its own
(bench/cluster/netns.py), deployed from deploy/ray/serve.yaml. Slow; needs root; cleaned up however it ends."""

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from bench.cluster.netns import ROOT, Cluster
from bench.serving.httpload import load
from tests.checkpoints import write_tiny_artifacts
from tests.deploy.project import answers_as_alone
from tests.images import digit_like

pytestmark = pytest.mark.slow
RAW = {"Content-Type": "application/octet-stream"}
CONFIG = ROOT / "deploy" / "ray" / "serve.yaml"


def config(artifacts: Path, folder: Path, **deployment: Any) -> Path:
    """The shipped config, serving `artifacts`, with these deployment settings over its own."""
    settings = yaml.safe_load(CONFIG.read_text())
    application = settings["applications"][0]
    application["runtime_env"]["env_vars"]["SAE_ARTIFACTS_DIR"] = str(artifacts)
    application["deployments"][0].update(deployment)
    path = folder / "serve.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ray-artifacts")
    tiny = write_tiny_artifacts(root / "tiny")
    served = root / "served"
    for name in ("mnist", "fashion-mnist"):
        shutil.copytree(tiny / name, served / name / "1")
    os.chmod(root, 0o755)
    return served


@pytest.fixture(scope="module")
def cluster(artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.fail("the Ray cluster tests make network namespaces, which needs root (make test runs as root in CI)")
    with Cluster(size=3) as running:
        folder = tmp_path_factory.mktemp("ray-config")
        running.deploy(config(artifacts, folder, autoscaling_config=None, num_replicas=2), replicas=2)
        yield running


def test_answers_through_two_nodes_proxies_equal_the_single_process_services(cluster: Cluster, artifacts: Path) -> None:
    serving = cluster.serving_nodes()
    assert len(serving) == 2
    images = np.stack([digit_like(seed) for seed in range(8)])
    answers_as_alone(artifacts, images, [node.url for node in serving], atol=1e-6)  # two different nodes' proxies


def test_replicas_land_on_distinct_nodes(cluster: Cluster) -> None:
    nodes = [r["node"] for r in cluster.replicas()]
    assert len(nodes) == 2 and len(set(nodes)) == 2, nodes


def loaded(url: str, connections: int, seconds: float, during: Any) -> dict[str, Any]:
    """The load's summary (bench/serving/httpload.py) with `during()` run a few seconds into it."""
    result: dict[str, Any] = {}
    body = digit_like(3).tobytes()
    loader = threading.Thread(
        target=lambda: result.update(load(f"{url}/classify", body, RAW["Content-Type"], connections, seconds))
    )
    loader.start()
    time.sleep(4)
    during()
    loader.join(timeout=seconds + 120)
    assert result, "the load did not finish"
    print(f"load: {result}")
    return result


def test_a_new_version_rolls_out_under_load_with_no_failed_request(
    cluster: Cluster, artifacts: Path, tmp_path: Path
) -> None:
    shutil.copytree(artifacts / "mnist" / "1", artifacts / "mnist" / "2")
    rollout = config(artifacts, tmp_path, autoscaling_config=None, num_replicas=2, user_config={"generation": 2})
    result = loaded(cluster.head.url, 8, 20, lambda: cluster.deploy(rollout, replicas=2))
    assert result["errors"] == 0 and result["ok"] > 0, result
    for node in cluster.serving_nodes():
        answer = httpx.post(f"{node.url}/classify", content=digit_like(0).tobytes(), headers=RAW, timeout=30)
        assert answer.headers["x-model-version"] == "2", node


def test_autoscaling_from_one_replica_up_under_a_load_step_and_back(
    cluster: Cluster, tmp_path: Path, artifacts: Path
) -> None:
    autoscaling = {
        "min_replicas": 1,
        "initial_replicas": 1,
        "max_replicas": 3,
        "target_ongoing_requests": 2,
        "upscale_delay_s": 1,
        "downscale_delay_s": 5,
        "metrics_interval_s": 1,
        "look_back_period_s": 2,
    }
    scaled = config(
        artifacts, tmp_path, autoscaling_config=autoscaling, num_replicas="auto", user_config={"generation": 2}
    )
    cluster.deploy(scaled)
    wait_for_replicas(cluster, lambda n: n == 1, 90)
    counts: list[int] = []
    result = loaded(cluster.head.url, 16, 30, lambda: counts.extend(watch_replicas(cluster, 20)))
    assert result["errors"] == 0, result
    assert max(counts) >= 2, counts
    wait_for_replicas(cluster, lambda n: n == 1, 120)


def watch_replicas(cluster: Cluster, seconds: float) -> list[int]:
    counts, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        counts.append(len(cluster.replicas()))
        time.sleep(1)
    return counts


def wait_for_replicas(cluster: Cluster, wanted: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = len(cluster.replicas())
        if wanted(count):
            return
        time.sleep(2)
    raise AssertionError(f"replicas: {count} after {timeout:g} s")


def test_a_worker_node_killed_under_load_loses_only_its_requests_in_flight(
    cluster: Cluster, artifacts: Path, tmp_path: Path
) -> None:
    """A worker node holding a replica loses power under load through the head's proxy: the requests it held fail,
    the replica is started again on the spare node, and serving goes on."""
    fixed = config(artifacts, tmp_path, autoscaling_config=None, num_replicas=2, user_config={"generation": 2})
    cluster.deploy(fixed, replicas=2)
    body = digit_like(3).tobytes()
    connections = 8
    victim = next(node for node in cluster.nodes[1:] if node.address in [r["node"] for r in cluster.replicas()])
    result = loaded(cluster.head.url, connections, 30, lambda: cluster.kill_node(victim))
    # At most every connection's request in flight was on the lost node's replica.
    assert result["errors"] <= connections, result
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        nodes = [r["node"] for r in cluster.replicas()]
        if len(nodes) == 2 and victim.address not in nodes:
            break
        time.sleep(2)
    assert len(nodes) == 2 and victim.address not in nodes and len(set(nodes)) == 2, nodes
    after = httpx.post(f"{cluster.head.url}/classify", content=body, headers=RAW, timeout=30)
    assert after.status_code == 200
