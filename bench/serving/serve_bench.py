"""Serving benchmark at equal resources: sae-serve against its peers on the same cores, by concurrency sweep.

Every server runs on 127.0.0.1 in turn with the others stopped, each as its documentation advises
for this many cores (N = the cores this process may use):

- sae-serve with its defaults (one worker process per core on the CPU);
- the plain FastAPI peer (one forward per request) under `uvicorn --workers N`;
- LitServe 0.2.19 with `workers_per_device=N`, batched (max_batch_size 64, batch_timeout 5 ms) and
  unbatched, its API servers at their default (one per inference worker);
- the same sae-serve app under granian (`--workers N`), for the choice of HTTP server.

Peers get `cores / N` torch threads per process, as sae-serve gives its workers. The client is wrk
(a compiled closed-loop load tool) on the same cores, posting one real 28x28 MNIST PNG as multipart
field `file` to /classify. As Triton's perf_analyzer does, each concurrency level (1, 2, 4, ... 128
connections) is measured in windows repeated until the last three agree within 10% on throughput
and on p99 (at most 8 windows), and reports their mean: req/s, p50, p90, p95, p99.

Then, on sae-serve with its defaults: the batch paths (256 images a request, raw uint8 and PNG
multipart) against the in-process ceilings of this machine (the /classify forward, and PNG decoding,
each the best of one process with every core and one process per core), and memory as PSS and USS
summed over all of the server's processes before and after a soak.

    .venv/bin/python -m bench.serving.serve_bench [--window 2] [--levels 1 2 4 ...] [--servers NAME ...]
        [--soak-requests 100000] [--csv docs/benchmarks/serve_sweep.csv] [--plot docs/serve_sweep.png]
"""

import argparse
import csv
import json
import multiprocessing
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from bench.harness import MULTIPART_TYPE, ROOT, Server, free_port, memory_mb, multipart, png_bytes, start_sae_serve

PYTHON = sys.executable
STABILITY = 0.10  # perf_analyzer's default stability percentage
MIN_WINDOWS, MAX_WINDOWS = 3, 8
LEVELS = [1, 2, 4, 8, 16, 32, 64, 128]
SERVERS = ["sae-serve", "FastAPI", "LitServe batched", "LitServe unbatched", "sae-serve app on granian"]
# wrk's summary, percentiles included, as one JSON line from its `done` callback.
WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, '
    .. '"p50_us": %d, "p90_us": %d, "p95_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(95), latency:percentile(99)))
end
"""


@dataclass
class Cell:
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    p90_ms: float = 0.0
    p95_ms: float = 0.0


@dataclass
class Level:
    server: str
    workers: int
    connections: int
    windows: int
    stable: bool
    requests: int
    errors: int
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float


def cores() -> int:
    return len(os.sched_getaffinity(0))


def lua_script(folder: Path, name: str, body: bytes, content_type: str) -> Path:
    body_path = folder / f"{name}.body"
    body_path.write_bytes(body)
    script = folder / f"{name}.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f'wrk.headers["Content-Type"] = "{content_type}"\n'
        f'local f = io.open("{body_path}", "rb")\nwrk.body = f:read("*all")\nf:close()\n' + WRK_DONE
    )
    return script


def wrk(url: str, script: Path, connections: int, seconds: float) -> Cell:
    threads = min(2, connections)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = re.search(r"^WRKJSON (.*)$", out, re.M)
    if found is None:
        raise RuntimeError(f"wrk printed no summary: {out[-2000:]}")
    s = json.loads(found.group(1))
    return Cell(
        requests=s["requests"],
        requests_per_s=s["requests"] / (s["duration_us"] / 1e6),
        p50_ms=s["p50_us"] / 1000,
        p99_ms=s["p99_us"] / 1000,
        errors=s["status_errors"] + s["socket_errors"],
        p90_ms=s["p90_us"] / 1000,
        p95_ms=s["p95_us"] / 1000,
    )


def spread(values: list[float]) -> float:
    return (max(values) - min(values)) / statistics.fmean(values) if min(values) > 0 else float("inf")


def measure_level(contender: "Contender", script: Path, connections: int, window: float) -> Level:
    """Windows until the last three agree within STABILITY on req/s and p99; their mean."""
    cells: list[Cell] = []
    stable = False
    while len(cells) < MAX_WINDOWS:
        cells.append(wrk(f"{contender.server.url}/classify", script, connections, window))
        last = cells[-MIN_WINDOWS:]
        if len(last) == MIN_WINDOWS:
            stable = (
                spread([c.requests_per_s for c in last]) <= STABILITY and spread([c.p99_ms for c in last]) <= STABILITY
            )
            if stable:
                break
    last = cells[-MIN_WINDOWS:]

    def mean(get: Callable[[Cell], float]) -> float:
        return statistics.fmean(get(c) for c in last)

    return Level(
        server=contender.name,
        workers=contender.workers,
        connections=connections,
        windows=len(cells),
        stable=stable,
        requests=sum(c.requests for c in cells),
        errors=sum(c.errors for c in cells),
        requests_per_s=mean(lambda c: c.requests_per_s),
        p50_ms=mean(lambda c: c.p50_ms),
        p90_ms=mean(lambda c: c.p90_ms),
        p95_ms=mean(lambda c: c.p95_ms),
        p99_ms=mean(lambda c: c.p99_ms),
    )


@dataclass
class Contender:
    """A server under measurement: its name in the tables, its worker processes, the process itself."""

    name: str
    workers: int
    server: Server


def start(name: str, artifacts: Path, workers: int | None = None, **env_extra: str) -> Contender:
    """One server on a free port. `workers` None: each at its default for this machine's cores."""
    n = workers or cores()
    if name == "sae-serve":
        env = {"SAE_LOG_LEVEL": "warning", **({"SAE_WORKERS": str(workers)} if workers else {}), **env_extra}
        # Throughput against peers that bound nothing: closed loops of 64 connections of 256 images would otherwise
        # meet the default bound of pending images (bench/serving/overload_bench.py measures that bound).
        env = {"SAE_MAX_PENDING_IMAGES": "0", **env}
        return Contender(name, n, start_sae_serve(artifacts, env))
    port = free_port()
    if name == "sae-serve app on granian":
        sae_env = {"SAE_PORT": str(port), "SAE_ARTIFACTS_DIR": str(artifacts), "SAE_LOG_LEVEL": "warning"}
        command = [str(Path(PYTHON).parent / "granian"), "--interface", "asgi", "--factory", "--loop", "uvloop"]
        command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(n), "--log-level", "warning"]
        command.append("service.workers.main:worker_app")
        return Contender(name, n, Server(name, command, port, {**sae_env, "SAE_WORKERS": str(n)}))
    # The peers' share of the cores, as sae-serve's workers have.
    peer_env = {"PEER_CHECKPOINT": str(artifacts / "mnist"), "OMP_NUM_THREADS": str(max(1, cores() // n))}
    if name == "FastAPI":
        command = [PYTHON, "-m", "uvicorn", "bench.serving.peers.fastapi_peer:app", "--host", "127.0.0.1"]
        command += ["--port", str(port), "--workers", str(n), "--log-level", "warning"]
        return Contender(name, n, Server(name, command, port, peer_env))
    batched = {"LitServe batched": "batched", "LitServe unbatched": "unbatched"}[name]
    command = [PYTHON, "-m", "bench.serving.peers.litserve_peer", str(port), str(n), batched]
    return Contender(name, n, Server(name, command, port, peer_env))


def _forward_rate(args: tuple[str, str, int, float]) -> float:
    """Images/s of /classify's forward (the service's classify operation, 256 images a call) in one process, in
    `runtime` with `threads` intra-op threads, for `seconds`."""
    checkpoint_dir, runtime, threads, seconds = args
    from models.layout import newest_version, read_card
    from service.core import forward
    from service.core.repository import ServedModel
    from service.core.runtime import Placement

    directory = newest_version(Path(checkpoint_dir))
    card = read_card(directory)
    placement = Placement(runtime, "cpu", threads)  # type: ignore[arg-type]
    served = ServedModel("mnist", card, placement.runner(directory, card))
    pixels = np.random.default_rng(0).integers(0, 256, (256, 28, 28), dtype=np.uint8)
    forward.classify(served, pixels)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        forward.classify(served, pixels)
        done += len(pixels)
    return done / (time.perf_counter() - start)


def _decode_rate(args: tuple[list[bytes], float]) -> float:
    from service.core.imaging import decode_image

    pngs, seconds = args
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for data in pngs:
            decode_image(data, 10**6)
        done += len(pngs)
    return done / (time.perf_counter() - start)


def ceilings(artifacts: Path, pngs: list[bytes], seconds: float = 3.0, runtime: str = "auto") -> dict[str, float]:
    """In-process images/s on this machine, each the better of one process on every core and one per core; the
    forward in the runtime sae-serve uses (SAE_RUNTIME's choices)."""
    n = cores()
    context = multiprocessing.get_context("spawn")
    checkpoint = str(artifacts / "mnist")
    with context.Pool(n) as pool:
        forward_one = pool.map(_forward_rate, [(checkpoint, runtime, n, seconds)])[0]
        forward_each = sum(pool.map(_forward_rate, [(checkpoint, runtime, 1, seconds)] * n))
        decode_one = pool.map(_decode_rate, [(pngs, seconds)])[0]
        decode_each = sum(pool.map(_decode_rate, [(pngs, seconds)] * n))
    return {
        "forward, one process": forward_one,
        f"forward, {n} processes": forward_each,
        "forward": max(forward_one, forward_each),
        "PNG decode, one process": decode_one,
        f"PNG decode, {n} processes": decode_each,
        "PNG decode": max(decode_one, decode_each),
    }


def plot(levels: list[Level], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for name in dict.fromkeys(level.server for level in levels):
        rows = [level for level in levels if level.server == name]
        ax.plot([r.requests_per_s for r in rows], [r.p99_ms for r in rows], marker="o", label=name)
        for r in rows:
            if r.connections in (1, 8, 64, 128):
                ax.annotate(
                    str(r.connections),
                    (r.requests_per_s, r.p99_ms),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
    ax.set_xlabel("throughput, requests/s")
    ax.set_ylabel("p99 latency, ms (log)")
    ax.set_yscale("log")
    ax.set_title(f"/classify, one PNG a request, {cores()} cores; points: 1 to 128 connections")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


@dataclass
class SaeServeFigures:
    """sae-serve at its defaults: the batch paths, and memory before and after a soak."""

    workers: int
    raw: Level
    png: Level
    memory_start: dict[str, float]
    memory_warm: dict[str, float]
    memory_end: dict[str, float]
    soaked: int
    soak_errors: int


def sweep(names: list[str], artifacts: Path, one: Path, levels: list[int], window: float) -> list[Level]:
    """Every server in turn, alone, at every concurrency level."""
    measured: list[Level] = []
    for name in names:
        contender = start(name, artifacts)
        try:
            wrk(f"{contender.server.url}/classify", one, 64, 2)  # warm-up: every worker has answered
            for connections in levels:
                level = measure_level(contender, one, connections, window)
                measured.append(level)
                print(
                    f"{name} ({contender.workers} workers), {connections} connections: "
                    f"{level.requests_per_s:,.0f} req/s, p50 {level.p50_ms:.2f} ms, p99 {level.p99_ms:.2f} ms, "
                    f"{level.windows} windows{'' if level.stable else ' (not stable)'}, {level.errors} errors",
                    flush=True,
                )
        finally:
            contender.server.stop()
    return measured


def batches_and_memory(
    artifacts: Path, scripts: tuple[Path, Path, Path], window: float, soak_requests: int
) -> SaeServeFigures:
    one, batch_raw, batch_png = scripts
    ours = start("sae-serve", artifacts)
    server = ours.server
    try:
        memory_start = memory_mb(server.pids())
        raw = measure_level(ours, batch_raw, 8, window)
        png = measure_level(ours, batch_png, 8, window)
        soaked, soak_errors = 0, 0
        wrk(f"{server.url}/classify", one, 64, 3)
        memory_warm = memory_mb(server.pids())
        while soaked < soak_requests:
            cell = wrk(f"{server.url}/classify", one, 64, 15)
            soaked += cell.requests
            soak_errors += cell.errors
        return SaeServeFigures(
            ours.workers, raw, png, memory_start, memory_warm, memory_mb(server.pids()), soaked, soak_errors
        )
    finally:
        server.stop()


def write_csv(levels: list[Level], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(levels[0])))
        writer.writeheader()
        for level in levels:
            writer.writerow({k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(level).items()})


def report(args: argparse.Namespace, levels: list[Level], ceiling: dict[str, float], ours: SaeServeFigures) -> None:
    """The tables and the goals, as the README shows them."""
    raw, png, sae_workers = ours.raw, ours.png, ours.workers
    memory_start, memory_warm, memory_end = ours.memory_start, ours.memory_warm, ours.memory_end
    soaked, soak_errors = ours.soaked, ours.soak_errors

    print()
    print(
        f"machine: {platform.machine()}, {cores()} cores, torch {torch.__version__}, Python {platform.python_version()}"
    )
    print(f"wrk on the same cores; windows of {args.window:g} s until the last 3 agree within 10% (at most 8)")
    print(f"CSV: {args.csv}, plot: {args.plot}")
    names = list(dict.fromkeys(level.server for level in levels))
    by = {(level.server, level.connections): level for level in levels}
    print()
    print("| connections | " + " | ".join(f"{n} ({by[(n, args.levels[0])].workers} w)" for n in names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for connections in args.levels:
        cells = []
        for n in names:
            level = by[(n, connections)]
            mark = "" if level.stable else "*"
            cells.append(f"{level.requests_per_s:,.0f} req/s, p99 {level.p99_ms:.1f} ms{mark}")
        print(f"| {connections} | " + " | ".join(cells) + " |")
    print("(* not stable within 10% in 8 windows; p50/p90/p95 in the CSV)")
    print()
    print("| batch path (256 images a request, 8 connections) | images/s | share of the ceiling |")
    print("|---|---|---|")
    for key, value in ceiling.items():
        print(f"| in-process ceiling: {key} | {value:,.0f} | |")
    raw_rate, png_rate = 256 * raw.requests_per_s, 256 * png.requests_per_s
    raw_share, png_share = raw_rate / ceiling["forward"], png_rate / ceiling["PNG decode"]
    print(
        f"| raw uint8 (application/octet-stream), p99 {raw.p99_ms:.1f} ms | {raw_rate:,.0f} | {100 * raw_share:.0f}% |"
    )
    print(f"| PNG multipart, p99 {png.p99_ms:.1f} ms | {png_rate:,.0f} | {100 * png_share:.0f}% |")
    # Each PNG is decoded and then goes through the forward, on the same cores: the two ceilings in turn.
    in_turn = 1 / (1 / ceiling["forward"] + 1 / ceiling["PNG decode"])
    print(
        f"| PNG multipart, against decoding and the forward in turn ({in_turn:,.0f}) | "
        f"| {100 * png_rate / in_turn:.0f}% |"
    )
    print()
    print(f"sae-serve ({sae_workers} workers), memory over all its processes, MB:")
    print(f"  at start: PSS {memory_start['pss']:.0f}, USS {memory_start['uss']:.0f}, RSS {memory_start['rss']:.0f}")
    print(f"  warm:     PSS {memory_warm['pss']:.0f}, USS {memory_warm['uss']:.0f}, RSS {memory_warm['rss']:.0f}")
    if soaked:
        growth = 100 * (memory_end["pss"] - memory_warm["pss"]) / memory_warm["pss"]
        print(
            f"  after a soak of {soaked:,} requests at 64 connections ({soak_errors} errors): "
            f"PSS {memory_end['pss']:.0f} ({growth:+.1f}%), USS {memory_end['uss']:.0f}"
        )

    print()
    peers = [n for n in names if not n.startswith("sae-serve")]
    if "sae-serve" in names and peers:
        ours64, ours1 = by.get(("sae-serve", 64)), by.get(("sae-serve", 1))
        if ours64:
            best = max((by[(p, 64)] for p in peers), key=lambda level: level.requests_per_s)
            ratio = ours64.requests_per_s / best.requests_per_s
            print(
                f"goal, 64 connections, >= 2x the best peer ({best.server}) with p99 no worse: x{ratio:.2f}, "
                f"p99 {ours64.p99_ms:.1f} vs {best.p99_ms:.1f} ms -> "
                f"{'met' if ratio >= 2 and ours64.p99_ms <= best.p99_ms else 'NOT met'}"
            )
        if ours1 and ("FastAPI", 1) in by:
            theirs = by[("FastAPI", 1)]
            print(
                f"goal, 1 connection, p50 no higher than FastAPI's: {ours1.p50_ms:.2f} vs {theirs.p50_ms:.2f} ms -> "
                f"{'met' if ours1.p50_ms <= theirs.p50_ms else 'NOT met'}"
            )
    print(
        f"goal, raw batch >= 70% of the forward ceiling: {100 * raw_share:.0f}% -> "
        f"{'met' if raw_share >= 0.7 else 'NOT met'}"
    )
    print(
        f"goal, PNG batch >= 50% of the PNG-decode ceiling: {100 * png_share:.0f}% -> "
        f"{'met' if png_share >= 0.5 else 'NOT met'}"
    )
    if soaked:
        grew = memory_end["pss"] > 1.05 * memory_warm["pss"]
        print(
            f"goal, PSS <= 1,200 MB with both models and {sae_workers} workers, no growth over the soak: "
            f"{memory_end['pss']:.0f} MB -> {'met' if memory_end['pss'] <= 1200 and not grew else 'NOT met'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=2.0, help="seconds of each measurement window")
    parser.add_argument("--levels", type=int, nargs="+", default=LEVELS, help="connection counts")
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=SERVERS)
    parser.add_argument("--soak-requests", type=int, default=100_000, help="requests in the memory soak (0: skip)")
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts", help="trained checkpoints")
    parser.add_argument("--csv", type=Path, default=ROOT / "docs" / "benchmarks" / "serve_sweep.csv")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "serve_sweep.png")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    from training.data import load_dataset

    data = load_dataset("mnist")
    pixels = data.test_images[:256].numpy()
    pngs = [png_bytes(p) for p in pixels]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        one = lua_script(folder, "one", multipart(pngs[:1]), MULTIPART_TYPE)
        batch_png = lua_script(folder, "batch_png", multipart(pngs), MULTIPART_TYPE)
        batch_raw = lua_script(folder, "batch_raw", pixels.tobytes(), "application/octet-stream")

        levels = sweep(args.servers, args.artifacts, one, args.levels, args.window)
        ours = batches_and_memory(args.artifacts, (one, batch_raw, batch_png), args.window, args.soak_requests)
    ceiling = ceilings(args.artifacts, pngs)

    write_csv(levels, args.csv)
    plot(levels, args.plot)
    report(args, levels, ceiling, ours)


if __name__ == "__main__":
    main()
