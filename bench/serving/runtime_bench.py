"""torch against ONNX Runtime as sae-serve's runtime, side by side, on this machine's CPU.

For each runtime (SAE_RUNTIME=torch, SAE_RUNTIME=onnxruntime), on the trained models in artifacts/:

- cold start: process start to the first 200 from /health/ready, one worker (median of --starts);
- memory: PSS and USS summed over the server's processes, at its defaults (a worker per core), both models loaded,
  at start and warm (after 64-connection load);
- 1-connection p50 and 64-connection req/s and p99 of /classify with one real MNIST PNG (multipart), by wrk on the
  same cores, in windows until the last three agree within 10% (bench/serving/serve_bench.py's method);
- the batch paths (256 images a request, raw uint8 and PNG multipart, 8 connections) against the in-process
  ceilings: the runtime's own forward (the service's classify operation, the best of one process with every core
  and a process per core) and PNG decoding;
- with --images: the images' sizes (`docker image inspect`: sae-serve, ONNX Runtime; sae-serve-cuda, torch) and the
  cold start of one container from `docker run` to ready, the artifacts mounted read-only.

    .venv/bin/python -m bench.serving.runtime_bench [--window 2] [--starts 3] [--images]
"""

import argparse
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.harness import MULTIPART_TYPE, ROOT, answers_ready, free_port, memory_mb, multipart, png_bytes
from bench.serving.serve_bench import ceilings, cores, lua_script, measure_level, start, wrk

RUNTIMES = ("torch", "onnxruntime")
IMAGES = {"torch": "sae-serve-cuda:latest", "onnxruntime": "sae-serve:latest"}


def docker_cold_start(image: str, artifacts: Path, runtime: str) -> float:
    """Seconds from `docker run` to the container's first 200 from /health/ready, one worker, in `runtime`."""
    port = free_port()
    name = f"sae-runtime-bench-{port}"
    command = ["docker", "run", "--rm", "--detach", "--name", name, "-e", "SAE_WORKERS=1", "-e", "SAE_GRPC_PORT=0"]
    command += ["-e", f"SAE_RUNTIME={runtime}"]
    command += ["-p", f"127.0.0.1:{port}:8000", "-v", f"{artifacts.resolve()}:/artifacts:ro", image]
    begun = time.monotonic()
    subprocess.run(command, check=True, capture_output=True)
    try:
        while not answers_ready(port):
            if time.monotonic() - begun > 120:
                raise RuntimeError(f"{image} not ready in 120 s")
            time.sleep(0.02)
        return time.monotonic() - begun
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    parser.add_argument("--window", type=float, default=2.0, help="seconds of each measurement window")
    parser.add_argument("--starts", type=int, default=3, help="cold starts measured, the median reported")
    parser.add_argument("--images", action="store_true", help="also the Docker images' sizes and cold starts")
    args = parser.parse_args()
    from training.data import load_dataset

    digits = load_dataset("mnist").test_images.numpy()
    pngs = [png_bytes(digits[i]) for i in range(256)]
    folder = Path(tempfile.mkdtemp(prefix="runtime-bench-"))
    one = lua_script(folder, "one", multipart(pngs[:1]), MULTIPART_TYPE)
    batch_raw = lua_script(folder, "raw", digits[:256].tobytes(), "application/octet-stream")
    batch_png = lua_script(folder, "png", multipart(pngs), MULTIPART_TYPE)
    rows: dict[str, dict[str, str]] = {}
    figures: dict[str, dict[str, float]] = {}
    for runtime in RUNTIMES:
        env = {"SAE_RUNTIME": runtime}
        starts = []
        for _ in range(args.starts):
            contender = start("sae-serve", args.artifacts, 1, **env)
            starts.append(contender.server.ready_seconds)
            contender.server.stop()
        contender = start("sae-serve", args.artifacts, None, **env)
        server = contender.server
        try:
            at_start = memory_mb(server.pids())
            wrk(f"{server.url}/classify", one, 64, 2)
            warm = memory_mb(server.pids())
            single = measure_level(contender, one, 1, args.window)
            many = measure_level(contender, one, 64, args.window)
            raw = measure_level(contender, batch_raw, 8, args.window)
            png = measure_level(contender, batch_png, 8, args.window)
        finally:
            server.stop()
        ceiling_of = ceilings(args.artifacts, pngs, 3.0, runtime)
        ceiling, decode = ceiling_of["forward"], ceiling_of["PNG decode"]
        raw_rate, png_rate = 256 * raw.requests_per_s, 256 * png.requests_per_s
        figures[runtime] = {"rps": many.requests_per_s, "p99": many.p99_ms, "p50_1": single.p50_ms}
        rows[runtime] = {
            "cold start, process to ready (1 worker)": f"{statistics.median(starts):.2f} s",
            f"PSS / USS at start, {contender.workers} workers": f"{at_start['pss']:.0f} / {at_start['uss']:.0f} MB",
            f"PSS / USS warm, {contender.workers} workers": f"{warm['pss']:.0f} / {warm['uss']:.0f} MB",
            "1 connection: p50": f"{single.p50_ms:.2f} ms",
            "64 connections: req/s, p99": f"{many.requests_per_s:,.0f}, {many.p99_ms:.1f} ms",
            "forward ceiling (256 images a call)": f"{ceiling:,.0f} images/s",
            "PNG decode ceiling (256 PNGs)": f"{decode:,.0f} images/s",
            "raw batch: images/s, share of the forward ceiling": f"{raw_rate:,.0f}, {100 * raw_rate / ceiling:.0f}%",
            "PNG batch: images/s, share of the decode ceiling": f"{png_rate:,.0f}, {100 * png_rate / decode:.0f}%",
        }
        if args.images:
            size = subprocess.run(
                ["docker", "image", "inspect", IMAGES[runtime], "--format", "{{.Size}}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            docker_starts = [docker_cold_start(IMAGES[runtime], args.artifacts, runtime) for _ in range(args.starts)]
            rows[runtime]["image size (sae-serve-cuda for torch, sae-serve for ONNX Runtime)"] = (
                f"{int(size) / 1e6:,.0f} MB"
            )
            rows[runtime]["cold start, `docker run` to ready (1 worker)"] = f"{statistics.median(docker_starts):.2f} s"
        print(f"{runtime}: done", flush=True)

    print()
    print(f"machine: {platform.machine()}, {cores()} cores, Python {platform.python_version()}; wrk on the same cores")
    print()
    print("| | torch | ONNX Runtime |")
    print("|---|---|---|")
    for key in rows["torch"]:
        print(f"| {key} | {rows['torch'][key]} | {rows['onnxruntime'][key]} |")
    torch_figures, ort_figures = figures["torch"], figures["onnxruntime"]
    print()
    print(
        f"ONNX Runtime / torch at 64 connections: x{ort_figures['rps'] / torch_figures['rps']:.2f} req/s, "
        f"p99 {ort_figures['p99']:.1f} vs {torch_figures['p99']:.1f} ms; 1-connection p50 "
        f"{ort_figures['p50_1']:.2f} vs {torch_figures['p50_1']:.2f} ms"
    )


if __name__ == "__main__":
    main()
