"""Overload: goodput and latency of the accepted requests at 0.5x, 1x, 2x, 4x and 8x a server's measured capacity,
under an open-loop load (bench.serving.openload: a constant arrival rate, latency counted from when each request was
due), with the model's pending requests bounded (SAE_MAX_PENDING_REQUESTS) and, for comparison, unbounded.

Capacity: the 200 answers a second of a closed loop of `--connections` keep-alive connections. Each request is one
POST /classify of `--images` raw 28x28 images (heavier requests keep the load generator, which shares the machine,
well ahead of the server). It starts one `sae-serve` worker on the CPU per bound, unless `--url` names a running
server or load balancer (the compose stack's, say), which it then measures as it is.

    .venv/bin/python -m bench.serving.overload_bench [--pending 64 0] [--seconds 10] [--images 16]
        [--url http://127.0.0.1:8080/classify] [--multiples 0.5 1 2 4 8]

Goals (issue 21): at 4x capacity, goodput at least 90% of capacity and the accepted requests' p99 at most 5x the p99
at half load; every request answered (a result or a quick refusal), none left waiting to the timeout.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from bench.harness import ROOT, start_sae_serve
from bench.serving.httpload import load
from bench.serving.openload import run_open_loop
from training.data import load_dataset

CONTENT_TYPE = "application/octet-stream"


def body(images: int) -> bytes:
    """`images` real MNIST test images as raw uint8 pixels."""
    return np.ascontiguousarray(load_dataset("mnist").test_images[:images].numpy()).tobytes()


def measure(url: str, payload: bytes, args: argparse.Namespace, label: str) -> None:
    closed = load(url, payload, CONTENT_TYPE, args.connections, args.seconds)
    capacity = closed["ok"] / args.seconds
    print(
        f"\n{label}: capacity {capacity:.1f} requests/s ({capacity * args.images:,.0f} images/s; closed loop of "
        f"{args.connections} connections, p99 {closed['p99_ms']:.1f} ms, statuses {closed['statuses']})"
    )
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
    parser.add_argument("--pending", type=int, nargs="+", default=[64, 0], help="SAE_MAX_PENDING_REQUESTS to run")
    parser.add_argument("--images", type=int, default=16, help="images in each request")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each load")
    parser.add_argument("--connections", type=int, default=8, help="of the closed loop that measures capacity")
    parser.add_argument("--multiples", type=float, nargs="+", default=[0.5, 1, 2, 4, 8])
    parser.add_argument("--grace", type=float, default=35.0, help="seconds to wait for answers after the last is due")
    parser.add_argument("--json", action="store_true", help="also print each load's whole summary")
    args = parser.parse_args()
    payload = body(args.images)
    print(f"POST /classify, {args.images} MNIST test images a request ({len(payload):,} bytes raw)")
    if args.url:
        measure(args.url, payload, args, args.url)
        return
    for pending in args.pending:
        settings = {"SAE_WORKERS": "1", "SAE_DEVICE": "cpu", "SAE_GRPC_PORT": "0", "SAE_LOG_LEVEL": "warning"}
        server = start_sae_serve(args.artifacts, {**settings, "SAE_MAX_PENDING_REQUESTS": str(pending)})
        try:
            measure(f"{server.url}/classify", payload, args, f"one worker, SAE_MAX_PENDING_REQUESTS={pending}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
