"""Serving benchmark: sae-serve against LitServe (batched) and a plain FastAPI app on the same checkpoint.

Each server runs on 127.0.0.1 in turn with the others idle; wrk (a compiled load tool) posts one
real 28x28 MNIST PNG as multipart field `file` to /classify, in interleaved rounds A B C A B C at
1, 16 and 64 connections. Then the batch path (256 images a request, as PNG multipart and as raw
uint8) against the in-process forward and PNG-decode ceilings measured in the same run, and the
service's memory before and after a long soak.

    .venv/bin/python bench/serve_bench.py [--seconds 5] [--rounds 2] [--soak-requests 100000]
"""

import argparse
import io
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from models import load_checkpoint
from service import predict
from service.imaging import decode_image
from service.registry import ServedModel
from training.data import load_dataset

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BOUNDARY = "saebenchboundary"


@dataclass
class Cell:
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def multipart(pngs: list[bytes]) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{i}.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + data
        + b"\r\n"
        for i, data in enumerate(pngs)
    ]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def lua_script(folder: Path, name: str, body: bytes, content_type: str) -> Path:
    body_path = folder / f"{name}.body"
    body_path.write_bytes(body)
    script = folder / f"{name}.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f'wrk.headers["Content-Type"] = "{content_type}"\n'
        f'local f = io.open("{body_path}", "rb")\nwrk.body = f:read("*all")\nf:close()\n'
    )
    return script


def to_ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(url: str, script: Path, connections: int, seconds: int) -> Cell:
    threads = min(2, connections)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s|m)\b", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s|m)\b", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    return Cell(requests, rate, to_ms(*p50.groups()), to_ms(*p99.groups()), errors)  # type: ignore[union-attr]


class Server:
    def __init__(self, name: str, command: list[str], port: int, env: dict[str, str]) -> None:
        self.name, self.port = name, port
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        probe = multipart([png_bytes(np.zeros((28, 28), np.uint8))])
        headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        while time.monotonic() < deadline:
            try:
                if httpx.post(f"{self.url}/classify", content=probe, headers=headers, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.process.returncode}")
            time.sleep(0.3)
        raise RuntimeError(f"{name} did not answer within 120 s")

    def rss_mb(self) -> float:
        """Resident memory of the server and all its child processes."""
        pids = [str(self.process.pid)]
        children = subprocess.run(["pgrep", "-s", str(self.process.pid)], capture_output=True, text=True).stdout.split()
        total = 0
        for pid in set(pids + children):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            match = re.search(r"VmRSS:\s+(\d+) kB", status)
            total += int(match.group(1)) if match else 0
        return total / 1024

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)


def start(name: str, artifacts: Path, **env_extra: str) -> Server:
    """One server on a free port; sae-serve runs one worker process unless SAE_WORKERS is given, as the peers do."""
    env_extra = {"SAE_WORKERS": "1", **env_extra}
    port = free_port()
    if name == "sae-serve":
        env = {"SAE_PORT": str(port), "SAE_ARTIFACTS_DIR": str(artifacts), "SAE_LOG_LEVEL": "warning", **env_extra}
        return Server(name, [str(Path(PYTHON).parent / "sae-serve")], port, env)
    module = {"LitServe": "bench.peers.litserve_peer", "FastAPI": "bench.peers.fastapi_peer"}[name]
    return Server(name, [PYTHON, "-m", module, str(port)], port, {"PEER_CHECKPOINT": str(artifacts / "mnist")})


def ceilings(artifacts: Path, pngs: list[bytes], pixels: np.ndarray) -> tuple[float, float]:
    """In-process images/s of the /classify forward and of PNG decoding, batches of 256."""
    checkpoint = load_checkpoint(artifacts / "mnist")
    served = ServedModel("mnist", checkpoint.model, checkpoint.card, torch.device("cpu"))
    best_forward = best_decode = 0.0
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(20):
            predict.classify(served, pixels)
        best_forward = max(best_forward, 20 * len(pixels) / (time.perf_counter() - start))
        start = time.perf_counter()
        for data in pngs:
            decode_image(data, 10**6)
        best_decode = max(best_decode, len(pngs) / (time.perf_counter() - start))
    return best_forward, best_decode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds A B C per connection count")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 16, 64], help="wrk connection counts")
    parser.add_argument("--soak-requests", type=int, default=100_000, help="requests in the memory soak (0: skip)")
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts", help="trained checkpoints")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")

    data = load_dataset("mnist")
    pixels = data.test_images[:256].numpy()
    pngs = [png_bytes(p) for p in pixels]
    names = ["sae-serve", "LitServe", "FastAPI"]
    results: dict[tuple[str, int], list[Cell]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        one = lua_script(folder, "one", multipart(pngs[:1]), f"multipart/form-data; boundary={BOUNDARY}")
        batch_png = lua_script(folder, "batch_png", multipart(pngs), f"multipart/form-data; boundary={BOUNDARY}")
        batch_raw = lua_script(folder, "batch_raw", pixels.tobytes(), "application/octet-stream")

        for _ in range(args.rounds):
            for name in names:
                server = start(name, args.artifacts)
                try:
                    wrk(f"{server.url}/classify", one, 16, 1)  # warm-up
                    for connections in args.connections:
                        cell = wrk(f"{server.url}/classify", one, connections, args.seconds)
                        results.setdefault((name, connections), []).append(cell)
                finally:
                    server.stop()

        server = start("sae-serve", args.artifacts)
        try:
            rss_start = server.rss_mb()
            png_batch = wrk(f"{server.url}/classify", batch_png, 4, args.seconds)
            raw_batch = wrk(f"{server.url}/classify", batch_raw, 4, args.seconds)
            soaked, soak_errors, rss_warm, rss_end = 0, 0, server.rss_mb(), 0.0
            if args.soak_requests:
                wrk(f"{server.url}/classify", one, 64, 3)
                rss_warm = server.rss_mb()
                while soaked < args.soak_requests:
                    cell = wrk(f"{server.url}/classify", one, 64, 15)
                    soaked += cell.requests
                    soak_errors += cell.errors
                rss_end = server.rss_mb()
        finally:
            server.stop()
    forward_ceiling, decode_ceiling = ceilings(args.artifacts, pngs, pixels)

    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    print(f"machine: {machine}, torch {torch.__version__}, Python {platform.python_version()}")
    print(
        f"wrk {args.seconds:g} s a cell, best of {args.rounds} interleaved rounds; one 28x28 PNG a request to /classify"
    )
    print()
    print("| connections | server | req/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|")
    best = {key: max(cells, key=lambda c: c.requests_per_s) for key, cells in results.items()}
    for connections in args.connections:
        for name in names:
            c = best[(name, connections)]
            print(
                f"| {connections} | {name} | {c.requests_per_s:,.0f} | {c.p50_ms:.2f} | {c.p99_ms:.2f} | {c.errors} |"
            )
    print()
    for connections in args.connections:
        ours = best[("sae-serve", connections)]
        for peer in names[1:]:
            theirs = best[(peer, connections)]
            ratios = (
                f"req/s x{ours.requests_per_s / theirs.requests_per_s:.2f}, "
                f"p50 x{ours.p50_ms / theirs.p50_ms:.2f}, p99 x{ours.p99_ms / theirs.p99_ms:.2f}"
            )
            print(f"{connections} connections, sae-serve / {peer}: {ratios}")
    print()
    print("| batch path (256 images a request, 4 connections) | images/s | share of ceiling |")
    print("|---|---|---|")
    print(f"| in-process forward ceiling (/classify's forward) | {forward_ceiling:,.0f} | |")
    print(f"| in-process PNG decode ceiling | {decode_ceiling:,.0f} | |")
    raw_rate, png_rate = 256 * raw_batch.requests_per_s, 256 * png_batch.requests_per_s
    raw_share, png_share = 100 * raw_rate / forward_ceiling, 100 * png_rate / decode_ceiling
    print(f"| raw uint8 (application/octet-stream) | {raw_rate:,.0f} | {raw_share:.0f}% of forward |")
    print(f"| PNG multipart | {png_rate:,.0f} | {png_share:.0f}% of PNG decode |")
    print()
    print(f"sae-serve memory (RSS, both models loaded): {rss_start:.0f} MB at start")
    if soaked:
        growth = 100 * (rss_end - rss_warm) / rss_warm
        print(f"soak: {soaked:,} requests at 64 connections, {soak_errors} errors")
        print(f"soak RSS: {rss_warm:.0f} MB after warm-up -> {rss_end:.0f} MB after the soak ({growth:+.1f}%)")


if __name__ == "__main__":
    main()
