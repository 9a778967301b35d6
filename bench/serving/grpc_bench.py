"""gRPC against REST on sae-serve, closed-loop: the Open Inference Protocol's ModelInfer over gRPC, its REST infer
with binary tensor data, and /classify with raw pixels, one image a request and 256, at 1 and 64 concurrent requests.

sae-serve runs with its defaults (free HTTP and gRPC ports aside) on the trained models in artifacts/, and the
load in client processes on the same cores (--processes), each keeping its share of the concurrent requests
busy: a request's next one leaves when its answer is in. gRPC goes through tritonclient.grpc.aio over
--channels connections in all (HTTP/2 streams share a connection, and the kernel spreads connections, not
streams, over the workers); REST through bench/serving/httpload.py's keep-alive connections, one per concurrent
request. Both infer calls ask for `probabilities` and `label` (binary on REST, raw_output_contents on gRPC);
/classify answers its JSON. Pixels: MNIST test images. Every cell runs --warmup seconds unmeasured, then
--seconds measured, and reports requests/s, images/s, p50 and p99 in ms, errors, and the CPU time a request cost
the server and the clients over the measured window (the clients share the server's cores, so a costlier
client leaves the server less); the table goes to --out.

    .venv/bin/python -m bench.serving.grpc_bench [--seconds 10] [--warmup 2] [--processes 2] [--channels 8]
        [--out docs/benchmarks/grpc_bench.txt]
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from tritonclient.utils import InferenceServerException

from bench.harness import ROOT, Server, free_port
from bench.serving import httpload
from bench.serving.serve_bench import cores, start

MODEL = "mnist"
OUTPUTS = ("probabilities", "label")
LEVELS = (1, 64)
BATCH = 256


@dataclass(frozen=True)
class Load:
    """One kind of request: its name, how many images each carries, and how to send it."""

    name: str
    images: int
    protocol: str  # "grpc" or "http"
    target: str  # host:port for gRPC, a URL for HTTP
    body: bytes  # the pixels for gRPC, the whole body for HTTP
    headers: tuple[tuple[str, str], ...] = ()


def v2_binary_body(pixels: np.ndarray) -> tuple[bytes, int]:
    """An Open Inference Protocol REST request with binary tensor data, and the length of its JSON part."""
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "shape": [len(pixels), 784],
                    "datatype": "UINT8",
                    "parameters": {"binary_data_size": pixels.size},
                }
            ],
            "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in OUTPUTS],
        }
    ).encode()
    return head + pixels.tobytes(), len(head)


def loads(server: Server, grpc_address: str, pixels: np.ndarray) -> list[Load]:
    kinds = []
    for count in (1, BATCH):
        images = pixels[:count]
        body, head_length = v2_binary_body(images)
        v2 = f"{server.url}/v2/models/{MODEL}/infer"
        length = (("Inference-Header-Content-Length", str(head_length)),)
        kinds += [
            Load(f"gRPC ModelInfer, {count} image(s)", count, "grpc", grpc_address, images.tobytes()),
            Load(f"REST /v2 infer (binary), {count} image(s)", count, "http", v2, body, length),
        ]
    one = pixels[:1].tobytes()
    kinds.insert(2, Load("REST /classify (raw), 1 image(s)", 1, "http", f"{server.url}/classify?model={MODEL}", one))
    return kinds


async def grpc_calls(
    client: triton_aio.InferenceServerClient, load: Load, stop_at: float, latencies: list[float], errors: list[str]
) -> None:
    pixels = np.frombuffer(load.body, np.uint8).reshape(load.images, 784)
    tensor = triton.InferInput("images", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels)
    outputs = [triton.InferRequestedOutput(name) for name in OUTPUTS]
    while time.perf_counter() < stop_at:
        started = time.perf_counter()
        try:
            await client.infer(MODEL, [tensor], outputs=outputs, client_timeout=30)
            latencies.append(time.perf_counter() - started)
        except InferenceServerException as e:
            errors.append(str(e.status()))


async def grpc_run(load: Load, concurrency: int, channels: int, seconds: float) -> tuple[list[float], list[str]]:
    latencies: list[float] = []
    errors: list[str] = []
    # A local subchannel pool: each client its own connection (by default equal channels share one).
    clients = [
        triton_aio.InferenceServerClient(load.target, channel_args=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(channels)
    ]
    stop_at = time.perf_counter() + seconds
    try:
        await asyncio.gather(
            *(grpc_calls(clients[i % channels], load, stop_at, latencies, errors) for i in range(concurrency))
        )
    finally:
        for client in clients:
            await client.close()
    return latencies, errors


async def http_run(load: Load, concurrency: int, seconds: float) -> tuple[list[float], list[str]]:
    host, port, request = httpload.build_request(load.target, load.body, "application/octet-stream")
    extra = "".join(f"{name}: {value}\r\n" for name, value in load.headers).encode()
    request = request.replace(b"\r\n", b"\r\n" + extra, 1)  # the extra headers right after the request line
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    stop_at = time.perf_counter() + seconds
    await asyncio.gather(
        *(httpload.connection(host, port, request, stop_at, latencies, statuses) for _ in range(concurrency))
    )
    del statuses["200"]
    return latencies, list(statuses.elements())


def client_process(
    load: Load, concurrency: int, channels: int, warmup: float, seconds: float, start_at: float
) -> tuple[list[float], list[str]]:
    """One client process's share of a cell: warm up, then measure (every process starts its clock together)."""

    async def run(duration: float) -> tuple[list[float], list[str]]:
        if load.protocol == "grpc":
            return await grpc_run(load, concurrency, channels, duration)
        return await http_run(load, concurrency, duration)

    time.sleep(max(0.0, start_at - time.time()))
    asyncio.run(run(warmup))
    return asyncio.run(run(seconds))


def shares(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def cpu_seconds(pids: set[int]) -> float:
    """User and system CPU seconds the processes have used so far (/proc/<pid>/stat, fields 14 and 15)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_during(pids: dict[str, set[int]], start_at: float, seconds: float) -> dict[str, float]:
    """Each group's CPU seconds over the measured window (from start_at to start_at + seconds, wall clock)."""
    time.sleep(max(0.0, start_at - time.time()))
    before = {name: cpu_seconds(group) for name, group in pids.items()}
    time.sleep(max(0.0, start_at + seconds - time.time()))
    return {name: cpu_seconds(group) - before[name] for name, group in pids.items()}


def measure(pool: Any, load: Load, concurrency: int, args: argparse.Namespace, server: Server) -> dict[str, Any]:
    processes = shares(concurrency, args.processes)
    channels = shares(min(args.channels, concurrency), len(processes))
    start_at = time.time() + 0.3
    jobs = [(load, n, c, args.warmup, args.seconds, start_at) for n, c in zip(processes, channels, strict=True)]
    clients = {process.pid for process in pool._pool}  # the pool's worker processes
    groups = {"server": server.pids(), "clients": clients}
    pending = pool.starmap_async(client_process, jobs)
    cpu = cpu_during(groups, start_at + args.warmup, args.seconds)
    parts = pending.get()
    latencies = sorted(latency for part in parts for latency in part[0])
    errors = [error for part in parts for error in part[1]]
    requests = len(latencies)
    return {
        "load": load.name,
        "concurrency": concurrency,
        "requests": requests,
        "requests_per_s": requests / args.seconds,
        "images_per_s": requests * load.images / args.seconds,
        "p50_ms": 1000 * httpload.percentile(latencies, 50),
        "p99_ms": 1000 * httpload.percentile(latencies, 99),
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        # CPU per request over the measured window: the server's (every process of its session) and the clients'.
        "server_cpu_ms_per_request": 1000 * cpu["server"] / max(requests, 1),
        "client_cpu_ms_per_request": 1000 * cpu["clients"] / max(requests, 1),
    }


def table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| load | concurrent requests | req/s | images/s | p50 ms | p99 ms | server CPU ms/request "
        "| client CPU ms/request | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        errors = f"{r['errors']} {r['error_kinds']}" if r["errors"] else "0"
        lines.append(
            f"| {r['load']} | {r['concurrency']} | {r['requests_per_s']:,.0f} | {r['images_per_s']:,.0f} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['server_cpu_ms_per_request']:.3f} | "
            f"{r['client_cpu_ms_per_request']:.3f} | {errors} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds of each cell")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each cell")
    parser.add_argument("--processes", type=int, default=2, help="client processes sharing a cell's requests")
    parser.add_argument("--channels", type=int, default=8, help="gRPC connections in all (at most one per request)")
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts", help="trained checkpoints")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "grpc_bench.txt")
    args = parser.parse_args()
    from training.data import load_dataset

    pixels = load_dataset(MODEL).test_images[:BATCH].numpy().reshape(BATCH, 784)
    grpc_port = free_port()
    ours = start("sae-serve", args.artifacts, SAE_GRPC_PORT=str(grpc_port))
    server = ours.server
    results = []
    try:
        with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
            # Every client process up and done importing before the first cell: its clock and the CPU window agree.
            pool.map(time.sleep, [0.1] * args.processes * 4)
            for load in loads(server, f"127.0.0.1:{grpc_port}", pixels):
                for concurrency in LEVELS:
                    results.append(measure(pool, load, concurrency, args, server))
                    print(json.dumps(results[-1]), flush=True)
    finally:
        server.stop()
    head = [
        f"python -m bench.serving.grpc_bench --seconds {args.seconds:g} --warmup {args.warmup:g} "
        f"--processes {args.processes} --channels {args.channels}",
        f"machine: {platform.machine()}, {cores()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}; sae-serve with its defaults ({ours.workers} worker(s)), "
        "the clients on the same cores",
        "",
    ]
    report = "\n".join(head + table(results)) + "\n"
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)


if __name__ == "__main__":
    main()
