"""Where a request's CPU time goes: one sae-serve worker and one FastAPI-peer worker under the same load.

Each server in turn runs one worker process pinned to the first core, with wrk pinned to the second posting one
real MNIST PNG (multipart; or 256 of them, or 256 images of raw pixels: --payload) to /classify over 64
connections, as bench/serving/serve_bench.py does. For --seconds
it reports requests/s, CPU milliseconds per request (the server's user and system time from /proc over the
requests answered), and py-spy's samples of every thread of the server (200 a second, without pausing it), each
counted in the part of the code it was in: the innermost frame that belongs to one of PARTS, read from the leaf
up.

    .venv/bin/python -m bench.serving.profile_request [--seconds 10] [--servers sae-serve FastAPI] [--keep DIR]
        [--payload png|png256|raw256]
"""

import argparse
import collections
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

from bench.harness import MULTIPART_TYPE, ROOT, multipart, png_bytes
from bench.serving.grpc_bench import cpu_seconds
from bench.serving.serve_bench import lua_script, start, wrk

# (part, the file paths its frames come from), in the order a frame is tested
PARTS = [
    ("forward (ONNX Runtime or torch)", r"onnxruntime/|/torch/|service/core/run_|service/core/forward\.py|peers/"),
    ("batching and the forward thread", r"service/core/batching\.py|concurrent/futures|threading\.py"),
    ("PNG decoding (Pillow)", r"/PIL/|service/core/imaging\.py|service/core/pixels\.py"),
    ("body: reading, multipart", r"service/http/bodies\.py|service/http/multipart\.py|python_multipart|multipart/"),
    ("answer: JSON", r"service/http/encoding\.py|orjson|/json/|fastapi/encoders\.py"),
    ("logs and metrics", r"/logging/|service/core/telemetry\.py|prometheus_client|service/workers/logs\.py"),
    (
        "sae-serve middleware",
        r"service/http/middleware\.py|service/http/admission\.py|service/core/timing\.py",
    ),
    ("FastAPI: dependencies and parameters", r"fastapi/dependencies|/pydantic|fastapi/_compat"),
    ("FastAPI and Starlette: routing, requests, responses", r"/fastapi/|/starlette/"),
    ("the service's routes and data plane", r"service/"),
    ("HTTP server (uvicorn, httptools)", r"/uvicorn/|httptools"),
    ("event loop (asyncio, uvloop)", r"/asyncio/|uvloop|selectors\.py"),
]
FRAME_FILE = re.compile(r"\(([^():]+):\d+\)$")


def pin(pids: set[int], core: int) -> None:
    for pid in pids:
        subprocess.run(["taskset", "-a", "-p", "-c", str(core), str(pid)], capture_output=True, check=False)


def part_of(stack: str) -> str:
    """The part of the innermost frame that belongs to one: py-spy's raw lines go from the root to the leaf."""
    frames = stack.split(";")
    for frame in reversed(frames):
        found = FRAME_FILE.search(frame)
        path = found.group(1) if found else frame
        for name, pattern in PARTS:
            if re.search(pattern, path):
                return name
    return "other"


def profile(name: str, artifacts: Path, one: Path, seconds: float, keep: Path, connections: int) -> dict[str, object]:
    contender = start(name, artifacts, 1)
    server = contender.server
    try:
        pids = server.pids()
        pin(pids, 0)
        url = f"{server.url}/classify"
        os.sched_setaffinity(0, {1})  # wrk inherits it
        try:
            wrk(url, one, connections, 2)  # warm: every path has run
        finally:
            os.sched_setaffinity(0, set(range(os.cpu_count() or 2)))
        raw = keep / f"{name.replace(' ', '_')}-{one.stem}.txt"
        command = [str(ROOT / ".venv/bin/py-spy"), "record", "--pid", str(server.process.pid), "--rate", "200"]
        command += ["--duration", f"{seconds:g}", "--format", "raw", "--nonblocking", "--threads", "--subprocesses"]
        spy = subprocess.Popen(
            [*command, "--output", str(raw)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        before = cpu_seconds(pids)
        os.sched_setaffinity(0, {1})  # wrk inherits it
        try:
            cell = wrk(url, one, connections, seconds)
        finally:
            os.sched_setaffinity(0, set(range(os.cpu_count() or 2)))
        used = cpu_seconds(pids) - before
        spy.wait(timeout=seconds + 60)
    finally:
        server.stop()
    counts: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        counts[part_of(stack)] += int(count)
        threads[stack.split(";")[0].split(" (")[0]] += int(count)
    return {"cell": cell, "cpu_ms": 1000 * used / max(1, cell.requests), "parts": counts, "threads": threads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--servers", nargs="+", default=["sae-serve", "FastAPI"], choices=["sae-serve", "FastAPI"])
    parser.add_argument("--keep", type=Path, default=None, help="folder for py-spy's raw stacks (default: temporary)")
    parser.add_argument(
        "--payload",
        choices=["png", "png256", "raw256"],
        default="png",
        help="each request: one PNG (default), 256 PNGs (multipart) or 256 images of raw pixels",
    )
    args = parser.parse_args()
    from training.data import load_dataset

    keep = args.keep or Path(tempfile.mkdtemp(prefix="profile-request-"))
    keep.mkdir(parents=True, exist_ok=True)
    digits = load_dataset("mnist").test_images.numpy()[:256]
    if args.payload == "raw256":
        one = lua_script(keep, "raw256", digits.tobytes(), "application/octet-stream")
    else:
        pngs = [png_bytes(digit) for digit in digits[: 256 if args.payload == "png256" else 1]]
        one = lua_script(keep, args.payload, multipart(pngs), MULTIPART_TYPE)
    for name in args.servers:
        connections = 64 if args.payload == "png" else 8  # serve_bench's batch paths: 8 connections
        found = profile(name, args.artifacts, one, args.seconds, keep, connections)
        cell, parts = found["cell"], found["parts"]
        assert isinstance(parts, collections.Counter)
        total = sum(parts.values()) or 1
        print(
            f"\n{name}, 1 worker on core 0, wrk on core 1, {args.payload} over {connections} connections, "
            f"{args.seconds:g} s: "
            f"{cell.requests_per_s:,.0f} req/s, p99 {cell.p99_ms:.1f} ms, {cell.errors} errors; "  # type: ignore[attr-defined]
            f"{found['cpu_ms']:.3f} CPU ms a request; {total:,} samples, raw stacks in {keep}"
        )
        print("| part | share of samples | CPU µs a request |")
        print("|---|---|---|")
        for part, count in parts.most_common():
            share = count / total
            print(f"| {part} | {100 * share:.1f}% | {1000 * share * float(found['cpu_ms']):.0f} |")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
