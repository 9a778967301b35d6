"""Overload: goodput and latency of the accepted requests at 0.5x, 1x, 2x, 4x and 8x a server's measured capacity,
under an open-loop load (bench.serving.openload: a constant arrival rate, latency counted from when each request was
due), with the model's pending images bounded (SAE_MAX_PENDING_IMAGES) and, for comparison, unbounded.

Capacity: the 200 answers a second of a closed loop of `--connections` keep-alive connections, on a server with no
bound (so that no refusal cuts it short), taken as the capacity of every configuration after it. Each request is one
POST /classify of `--images` raw 28x28 images (heavier requests keep the load generator, which shares the machine,
well ahead of the server). It starts one `sae-serve` worker on the CPU per bound, pinned to the first core with this
load generator on the others (so that neither's threads slow the other's); with `--compose`, through the compose
stack's nginx instead (bench/serving/stack.py brings it up with the bound set, and down again; capacity measured
through it with the bound in place, since a refused request there goes to the other replica), or `--url` names a
running server or load balancer to measure as it is.

    .venv/bin/python -m bench.serving.overload_bench [--pending 2048 0] [--seconds 10] [--images 32]
        [--compose | --url http://127.0.0.1:8080/classify] [--multiples 0.5 1 2 4 8]

Goals (issue 21): at 4x capacity, goodput at least 90% of capacity and the accepted requests' p99 at most 5x the p99
at half load; every request answered (a result or a quick refusal), none left waiting to the timeout.
"""

import argparse
import json
import os
from pathlib import Path

import numpy as np

from bench.harness import ROOT, Server, free_port, sae_serve_command, start_sae_serve
from bench.serving.httpload import load
from bench.serving.openload import run_open_loop
from bench.serving.stack import compose_stack
from training.data import load_dataset

CONTENT_TYPE = "application/octet-stream"
COMPOSE_PROJECT, COMPOSE_PORT = "sae-serve-overload-bench", "18091"


def body(images: int) -> bytes:
    """`images` real MNIST test images as raw uint8 pixels."""
    return np.ascontiguousarray(load_dataset("mnist").test_images[:images].numpy()).tobytes()


def capacity_of(url: str, payload: bytes, args: argparse.Namespace, label: str) -> float:
    closed = load(url, payload, CONTENT_TYPE, args.connections, args.seconds)
    capacity: float = closed["ok"] / args.seconds
    print(
        f"\ncapacity ({label}): {capacity:.1f} requests/s ({capacity * args.images:,.0f} images/s; closed loop of "
        f"{args.connections} connections, p99 {closed['p99_ms']:.1f} ms, statuses {closed['statuses']})"
    )
    return capacity


def measure(url: str, payload: bytes, args: argparse.Namespace, label: str, capacity: float) -> None:
    print(f"\n{label}, loads as multiples of {capacity:.1f} requests/s")
    print(
        "| offered | goodput | goodput / capacity | 200 p50 ms | 200 p99 ms | 200 max ms | 503 | 503 p99 ms | "
        "other | unanswered | client late p99 ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for multiple in args.multiples:
        result = run_open_loop(url, payload, CONTENT_TYPE, multiple * capacity, args.seconds, args.grace)
        statuses = result["statuses"]
        other = {k: v for k, v in statuses.items() if k not in ("200", "503", "unanswered")}
        print(
            f"| {multiple:g}x ({result['offered_per_s']:.0f}/s) | {result['goodput_per_s']:.1f}/s | "
            f"{result['goodput_per_s'] / capacity:.0%} | {result['ok_p50_ms']:.1f} | {result['ok_p99_ms']:.1f} | "
            f"{result['ok_max_ms']:.0f} | {statuses.get('503', 0)} | {result['refused_p99_ms']:.1f} | "
            f"{other or 0} | {result['unanswered']} | {result['client_late_p99_ms']:.1f} |"
        )
        if args.json:
            print(json.dumps({"label": label, "multiple": multiple, **result}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    parser.add_argument("--url", help="measure this running endpoint (a /classify URL) instead of starting servers")
    parser.add_argument("--pending", type=int, nargs="+", default=[2048, 0], help="SAE_MAX_PENDING_IMAGES to run")
    parser.add_argument("--images", type=int, default=32, help="images in each request")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each load")
    parser.add_argument("--connections", type=int, default=32, help="of the closed loop that measures capacity")
    parser.add_argument("--capacity", type=float, help="requests/s to take as capacity instead of measuring it")
    parser.add_argument("--multiples", type=float, nargs="+", default=[0.5, 1, 2, 4, 8])
    parser.add_argument("--grace", type=float, default=35.0, help="seconds to wait for answers after the last is due")
    parser.add_argument("--compose", action="store_true", help="through the compose stack's load balancer instead")
    parser.add_argument("--no-pinning", action="store_true", help="let the server and the load share every core")
    parser.add_argument("--json", action="store_true", help="also print each load's whole summary")
    args = parser.parse_args()
    payload = body(args.images)
    print(f"POST /classify, {args.images} MNIST test images a request ({len(payload):,} bytes raw)")
    if args.url:
        capacity = args.capacity or capacity_of(args.url, payload, args, args.url)
        measure(args.url, payload, args, args.url, capacity)
        return
    if args.compose:
        for pending in args.pending:
            label = f"the compose stack (nginx, 2 replicas of one worker), SAE_MAX_PENDING_IMAGES={pending}"
            with compose_stack(COMPOSE_PROJECT, COMPOSE_PORT, {"SAE_MAX_PENDING_IMAGES": str(pending)}):
                url = f"http://127.0.0.1:{COMPOSE_PORT}/classify"
                capacity = args.capacity or capacity_of(url, payload, args, label)
                measure(url, payload, args, label, capacity)
        return
    cores = sorted(os.sched_getaffinity(0))
    pinned = len(cores) > 1 and not args.no_pinning
    if pinned:  # the server on the first core, this load generator on the others: neither slows the other down
        os.sched_setaffinity(0, cores[1:])
        print(f"server pinned to core {cores[0]}, load generator to {cores[1:]}")
    capacity = args.capacity
    for pending in ([] if capacity else [0]) + args.pending:
        settings = {"SAE_WORKERS": "1", "SAE_DEVICE": "cpu", "SAE_GRPC_PORT": "0", "SAE_LOG_LEVEL": "warning"}
        settings["SAE_MAX_PENDING_IMAGES"] = str(pending)
        if pinned:
            command = ["taskset", "-c", str(cores[0]), *sae_serve_command()]
            env = {"SAE_HOST": "127.0.0.1", "SAE_ARTIFACTS_DIR": str(args.artifacts.resolve()), **settings}
            server = Server("sae-serve", command, port := free_port(), {**env, "SAE_PORT": str(port)})
        else:
            server = start_sae_serve(args.artifacts, settings)
        try:
            label = f"one worker, SAE_MAX_PENDING_IMAGES={pending}"
            if not capacity:  # measured unbounded, so that no refusal cuts it short, and then the same for every bound
                capacity = capacity_of(f"{server.url}/classify", payload, args, label)
                continue
            measure(f"{server.url}/classify", payload, args, label, capacity)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
