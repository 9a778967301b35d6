"""sae-serve with one worker process against several: requests per second and memory, in one run.

    .venv/bin/python -m bench.serving.workers_bench [--workers 1 2] [--seconds 10] [--soak-seconds 30]

wrk posts one real 28x28 MNIST PNG as multipart field `file` to /classify at 1 and 64 connections,
then soaks each server at 64 connections. Memory is summed over the server's processes as PSS
(shared pages split between the processes that map them) and USS (pages no other process shares);
RSS, which counts shared library pages once per process, is shown beside them.
"""

import argparse
import platform
import tempfile
from pathlib import Path

import numpy as np

from bench.harness import MULTIPART_TYPE, ROOT, memory_mb, multipart, png_bytes
from bench.serving.serve_bench import cores, lua_script, start, wrk
from training.data import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="SAE_WORKERS values (default: 1 2)")
    parser.add_argument("--seconds", type=int, default=10, help="seconds of load per cell (default: 10)")
    parser.add_argument(
        "--soak-seconds", type=int, default=30, help="then a soak at 64 connections, PSS before and after (default: 30)"
    )
    args = parser.parse_args()
    artifacts = ROOT / "artifacts"
    digit = load_dataset("mnist").test_images[0].numpy().astype(np.uint8)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        body = multipart([png_bytes(digit)])
        script = lua_script(Path(tmp), "one", body, MULTIPART_TYPE)
        for workers in args.workers:
            server = start("sae-serve", artifacts, workers).server
            try:
                at_start = memory_mb(server.pids())
                wrk(f"{server.url}/classify", script, 64, 2)  # warm-up, both workers loaded
                one = wrk(f"{server.url}/classify", script, 1, args.seconds)
                many = wrk(f"{server.url}/classify", script, 64, args.seconds)
                loaded = memory_mb(server.pids())
                soak = wrk(f"{server.url}/classify", script, 64, args.soak_seconds)
                soaked = memory_mb(server.pids())
            finally:
                server.stop()
            rows.append(
                f"| {workers} | {one.p50_ms:.2f} | {many.requests_per_s:,.0f} | {many.p99_ms:.1f} | "
                f"{many.errors} | {at_start['pss']:.0f} | {loaded['pss']:.0f} | {loaded['uss']:.0f} | "
                f"{loaded['rss']:.0f} | {soak.requests:,} ({soak.errors} errors) | {soaked['pss']:.0f} |"
            )
    print(f"machine: {platform.machine()}, {cores()} cores")
    print(
        "| workers | p50 ms, 1 connection | req/s, 64 connections | p99 ms | errors | PSS MB at start | "
        "PSS MB after load | USS MB | RSS MB | soak requests | PSS MB after the soak |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
