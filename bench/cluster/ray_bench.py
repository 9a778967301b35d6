"""The cost of Ray Serve: the same app through a Ray Serve proxy against uvicorn directly, on the same cores, and
how throughput grows from one node to two and three (bench/cluster/netns.py: each node a network namespace of
this one machine, so the nodes share its two cores: the growth measures Ray's placement and proxies, not more
hardware).

Each window posts one raw 28x28 image to /classify for `--seconds` on `--connections` connections
(bench/serving/httpload.py), split over the proxies a setting names, three windows a setting; prints req/s (summed
over the proxies), and the worst proxy's p50 and p99. Ray's proxies are measured both ways: the Python proxy (the
default) and HAProxy (`RAY_SERVE_ENABLE_HA_PROXY=1`).

Run as root: `python -m bench.cluster.ray_bench [--artifacts artifacts] [--seconds 10]`.
"""

import argparse
import os
import platform
import shutil
import statistics
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from bench.cluster.netns import ROOT, Cluster
from bench.harness import start_sae_serve
from bench.serving.httpload import load

CONFIG = ROOT / "deploy" / "ray" / "serve.yaml"


def image() -> bytes:
    from training.data import load_dataset

    return bytes(load_dataset("mnist").test_images[0].numpy().tobytes())


def windows(urls: list[str], body: bytes, connections: int, seconds: float) -> list[dict[str, Any]]:
    """Three windows, the connections split over `urls` (every serving node's proxy, or one), each window's figures
    summed over them."""

    def window(length: float) -> dict[str, Any]:
        shares = [connections // len(urls) + (1 if i < connections % len(urls) else 0) for i in range(len(urls))]
        with ThreadPoolExecutor(len(urls)) as pool:
            parts = list(
                pool.map(
                    lambda job: load(f"{job[0]}/classify", body, "application/octet-stream", job[1], length, 1),
                    zip(urls, shares, strict=True),
                )
            )
        return {
            "requests_per_s": sum(p["requests_per_s"] for p in parts),
            "p50_ms": max(p["p50_ms"] for p in parts),
            "p99_ms": max(p["p99_ms"] for p in parts),
            "errors": sum(p["errors"] for p in parts),
            "statuses": [p["statuses"] for p in parts],
        }

    window(2)  # warm-up
    return [window(seconds) for _ in range(3)]


def line(name: str, results: list[dict[str, Any]]) -> str:
    rates = [r["requests_per_s"] for r in results]
    p50 = statistics.median(r["p50_ms"] for r in results)
    p99 = statistics.median(r["p99_ms"] for r in results)
    errors = sum(r["errors"] for r in results)
    if errors:
        print(f"statuses: {[r['statuses'] for r in results]}")
    spread = ", ".join(f"{rate:,.0f}" for rate in rates)
    return f"| {name} | {statistics.median(rates):,.0f} ({spread}) | {p50:.1f} | {p99:.1f} | {errors} |"


def ray_config(artifacts: Path, folder: Path, replicas: int) -> Path:
    settings = yaml.safe_load(CONFIG.read_text())
    application = settings["applications"][0]
    application["runtime_env"]["env_vars"]["SAE_ARTIFACTS_DIR"] = str(artifacts.resolve())
    application["deployments"][0].update(autoscaling_config=None, num_replicas=replicas)
    path = folder / f"serve-{replicas}.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--skip-ray", action="store_true", help="only the uvicorn rows")
    args = parser.parse_args()
    body = image()
    cores = len(os.sched_getaffinity(0))
    print(f"machine: {platform.machine()}, {cores} cores, Python {platform.python_version()}")
    print(f"{args.connections} connections, three {args.seconds:g} s windows each (median, and each)\n")
    print("| setting | req/s | p50 (ms) | p99 (ms) | errors |")
    print("|---|---|---|---|---|")
    for workers in (1, cores):
        server = start_sae_serve(args.artifacts, {"SAE_WORKERS": str(workers), "SAE_GRPC_PORT": "0"})
        try:
            print(
                line(
                    f"uvicorn directly, {workers} worker(s)",
                    windows([server.url], body, args.connections, args.seconds),
                )
            )
        finally:
            server.stop()
    if args.skip_ray:
        return
    folder = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    try:
        for mode, env in (("Python proxies", {}), ("HAProxy", {"RAY_SERVE_ENABLE_HA_PROXY": "1"})):
            with Cluster(size=3, env=env) as cluster:
                for replicas in (1, 2, 3):
                    cluster.deploy(ray_config(args.artifacts, folder, replicas), replicas=replicas)
                    serving = [node.url for node in cluster.serving_nodes()]
                    for urls, where in (([cluster.head.url], "the head's proxy"), (serving, "every node's")):
                        if where == "every node's" and replicas == 1:
                            continue  # one replica on the head: the same proxy
                        name = f"Ray Serve ({mode}), {replicas} replica(s) on as many nodes, through {where}"
                        print(line(name, windows(urls, body, args.connections, args.seconds)))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
