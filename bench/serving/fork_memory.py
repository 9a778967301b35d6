"""Would loading the models before forking let worker processes share more memory? PSS of both ways.

    .venv/bin/python -m bench.serving.fork_memory [--workers 2] [--forwards 20000]

spawn: what `sae-serve` does: each worker is a fresh interpreter that imports torch and loads both
models itself. fork: a parent imports torch and loads both models with one torch thread (never
starting a thread pool before the fork), then forks the workers, which inherit all of it
copy-on-write. Either way each worker then runs `--forwards` single-image /classify forwards on
each model, with `cores / workers` torch threads, and waits. Memory is PSS and USS summed over
every process of the run (parent included), read from /proc/<pid>/smaps_rollup, after loading and
after the forwards.
"""

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

from bench.harness import ROOT, memory_mb

MODELS = ("mnist", "fashion-mnist")


def load(artifacts: Path) -> list[object]:
    import torch

    from models import load_checkpoint
    from service.core.repository import ServedModel
    from service.core.run_torch import TorchRunner

    served = []
    for name in MODELS:
        checkpoint = load_checkpoint(artifacts / name)
        runner = TorchRunner(checkpoint.model, checkpoint.card, checkpoint.judge, torch.device("cpu"))
        served.append(ServedModel(name, checkpoint.card, runner))
    return served


def work(served: list[object] | None, artifacts: Path, threads: int, forwards: int, pipe: Connection) -> None:
    """One worker: load (if not inherited), say so, run the forwards, say so, wait to be told to end."""
    import numpy as np
    import torch

    from service.core import forward

    torch.set_num_threads(threads)
    models = served if served is not None else load(artifacts)
    pipe.send("loaded")
    pipe.recv()
    pixels = np.random.default_rng(os.getpid()).integers(0, 256, (1, 28, 28), dtype=np.uint8)
    for _ in range(forwards):
        for model in models:
            forward.classify(model, pixels)  # type: ignore[arg-type]
    pipe.send("done")
    pipe.recv()


def run(method: str, workers: int, forwards: int, artifacts: Path) -> dict[str, dict[str, float]]:
    served = None
    if method == "fork":
        import torch

        torch.set_num_threads(1)  # no intra-op thread pool exists in the parent at fork time
        served = load(artifacts)
    context = multiprocessing.get_context(method)
    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    pipes, processes = [], []
    for _ in range(workers):
        parent_end, child_end = context.Pipe()
        process = context.Process(target=work, args=(served, artifacts, threads, forwards, child_end))
        process.start()
        pipes.append(parent_end)
        processes.append(process)
    pids = [os.getpid()] + [p.pid for p in processes if p.pid is not None]
    for pipe in pipes:
        assert pipe.recv() == "loaded"
    time.sleep(1)
    loaded = memory_mb(pids)
    started = time.perf_counter()
    for pipe in pipes:
        pipe.send("go")
    for pipe in pipes:
        assert pipe.recv() == "done"
    seconds = time.perf_counter() - started
    after = memory_mb(pids)
    for pipe in pipes:
        pipe.send("end")
    for process in processes:
        process.join(timeout=30)
    return {"loaded": loaded, "after": after, "seconds": {"forwards": seconds}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--forwards", type=int, default=20_000, help="single-image forwards per model per worker")
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    parser.add_argument("--one", choices=["spawn", "fork"], help=argparse.SUPPRESS)  # one method, JSON out
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run(args.one, args.workers, args.forwards, args.artifacts)))
        return
    print(f"{args.workers} workers, {args.forwards:,} forwards per model each; MB summed over all processes")
    print("| start method | PSS loaded | USS loaded | PSS after forwards | USS after forwards | forwards took s |")
    print("|---|---|---|---|---|---|")
    for method in ("spawn", "fork"):
        # Each method in a fresh interpreter, so that the parent of `spawn` has not imported torch.
        command = [sys.executable, "-m", "bench.serving.fork_memory", "--one", method, "--workers", str(args.workers)]
        command += ["--forwards", str(args.forwards), "--artifacts", str(args.artifacts)]
        result = json.loads(subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout)
        loaded, after = result["loaded"], result["after"]
        print(
            f"| {method} | {loaded['pss']:.0f} | {loaded['uss']:.0f} | {after['pss']:.0f} | {after['uss']:.0f} | "
            f"{result['seconds']['forwards']:.1f} |"
        )


if __name__ == "__main__":
    main()
