"""Bounded load on a real sae-serve on 127.0.0.1: good and bad requests mixed across both models.

Every good answer is checked against the unbatched model's answer for the image sent (label, or
embedding), every bad request against its expected 4xx; it counts 5xx, lost and mismatched
answers, and the server's memory after the first and the last 5,000 requests. test_load.py runs it
and prints `LoadReport.summary()` (`pytest tests/service/http/test_load.py -m slow -s` shows it).
"""

import asyncio
import io
import os
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import torch

from bench.harness import png_bytes, start_sae_serve
from models import load_checkpoint, to_model_input
from training.data import load_dataset

IMAGES_PER_MODEL = 200
RSS_WINDOW = 5000


@dataclass
class LoadReport:
    requests: int = 0
    good: int = 0
    bad: int = 0
    server_errors: int = 0
    lost: int = 0
    mismatched: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    rss_first_mb: float = 0.0
    rss_last_mb: float = 0.0
    problems: list[str] = field(default_factory=list)

    concurrency: int = 0
    rss_window: int = 0

    @property
    def rss_growth(self) -> float:
        return (self.rss_last_mb - self.rss_first_mb) / self.rss_first_mb

    def summary(self) -> str:
        """The figures, as a user would quote them."""
        latencies = np.array(self.latencies_ms)
        lines = [
            f"machine: {platform.machine()}, {os.cpu_count()} cores; client: httpx (Python) on the same cores",
            f"{self.requests:,} requests ({self.good:,} good, {self.bad:,} bad) at concurrency {self.concurrency}",
            f"in {self.seconds:.1f} s: {self.requests / self.seconds:,.0f} req/s",
            f"latency p50 {np.percentile(latencies, 50):.1f} ms, p99 {np.percentile(latencies, 99):.1f} ms",
            f"5xx: {self.server_errors}, lost: {self.lost}, mismatched: {self.mismatched}",
            f"RSS after the first {self.rss_window:,}: {self.rss_first_mb:.0f} MB, at the end: "
            f"{self.rss_last_mb:.0f} MB ({100 * self.rss_growth:+.1f}%)",
        ]
        return "\n".join(lines + [f"problem: {problem}" for problem in self.problems[:10]])


@dataclass
class Expected:
    pngs: list[bytes]
    pixels: np.ndarray  # (N, 28, 28)
    labels: list[int]
    embeddings: np.ndarray  # (N, 256)


def expectations(artifacts: Path) -> dict[str, Expected]:
    """The unbatched model's answers for the first test images of each data set."""
    out = {}
    for name in ("mnist", "fashion-mnist"):
        model = load_checkpoint(artifacts / name).model
        pixels = load_dataset(name).test_images[:IMAGES_PER_MODEL].numpy()
        with torch.inference_mode():
            x = to_model_input(torch.from_numpy(pixels))
            labels = model.classify(x).argmax(1).tolist()
            embeddings = model.encode(x).numpy()
        out[name] = Expected([png_bytes(p) for p in pixels], pixels, labels, embeddings)
    return out


def rss_mb(pid: int) -> float:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else 0.0


BAD_REQUESTS: list[tuple[str, dict[str, object], int]] = [
    ("/classify?model=mnist", {"content": b"\x89PNG garbage", "headers": {"Content-Type": "image/png"}}, 400),
    (
        "/embed?model=../../etc/passwd",
        {"content": b"\0" * 784, "headers": {"Content-Type": "application/octet-stream"}},
        404,
    ),
    ("/reconstruct?model=fashion-mnist", {"json": {"images": [[[0] * 28] * 27]}}, 422),
    ("/classify?model=fashion-mnist", {"content": b"a,b", "headers": {"Content-Type": "text/csv"}}, 415),
    ("/embed?model=mnist", {"content": b'{"images": [[NaN]]}', "headers": {"Content-Type": "application/json"}}, 422),
]


async def one_request(client: httpx.AsyncClient, i: int, expected: dict[str, Expected], report: LoadReport) -> None:
    name = "mnist" if i % 2 else "fashion-mnist"
    case = i % 10
    image = (i // 10) % IMAGES_PER_MODEL
    want = expected[name]
    start = time.perf_counter()
    try:
        if case < 3:
            bad_path, kwargs, status = BAD_REQUESTS[(i // 10) % len(BAD_REQUESTS)]
            response = await client.post(bad_path, **kwargs)  # type: ignore[arg-type]
            report.bad += 1
            if response.status_code != status or "detail" not in response.json():
                report.mismatched += 1
                report.problems.append(f"{bad_path}: {response.status_code} instead of {status}")
        elif case < 7:
            files = [("file", ("x.png", want.pngs[image], "image/png"))]
            response = await client.post(f"/classify?model={name}&top_k=1", files=files)
            report.good += 1
            if response.status_code == 200 and response.json()["predictions"][0]["label"] != want.labels[image]:
                report.mismatched += 1
                report.problems.append(f"classify {name} image {image}: wrong label")
        elif case < 9:
            picks = [(image + k) % IMAGES_PER_MODEL for k in range(4)]
            body = want.pixels[picks].tobytes()
            response = await client.post(
                f"/classify?model={name}&top_k=1", content=body, headers={"Content-Type": "application/octet-stream"}
            )
            report.good += 1
            got = [p["label"] for p in response.json()["predictions"]] if response.status_code == 200 else []
            if response.status_code == 200 and got != [want.labels[k] for k in picks]:
                report.mismatched += 1
                report.problems.append(f"batch {name} images {picks}: wrong labels")
        else:
            files = [("file", ("x.png", want.pngs[image], "image/png"))]
            response = await client.post(f"/embed?model={name}", files=files, headers={"Accept": "application/x-npy"})
            report.good += 1
            if response.status_code == 200:
                got_codes = np.load(io.BytesIO(response.content))
                if not np.allclose(got_codes[0], want.embeddings[image], atol=1e-5):
                    report.mismatched += 1
                    report.problems.append(f"embed {name} image {image}: wrong embedding")
        if response.status_code >= 500:
            report.server_errors += 1
        elif case >= 3 and response.status_code != 200:
            report.mismatched += 1
            report.problems.append(f"good request {i}: status {response.status_code}")
    except (httpx.HTTPError, ValueError, KeyError) as e:
        report.lost += 1
        report.problems.append(f"request {i}: {e!r}")
    report.requests += 1
    report.latencies_ms.append(1000 * (time.perf_counter() - start))


async def load(url: str, pid: int, total: int, concurrency: int, expected: dict[str, Expected]) -> LoadReport:
    window = min(RSS_WINDOW, total // 4)
    report = LoadReport(concurrency=concurrency, rss_window=window)
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        for i in counter:
            await one_request(client, i, expected, report)
            if report.requests == window:
                report.rss_first_mb = rss_mb(pid)

    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    report.seconds = time.perf_counter() - start
    report.rss_last_mb = rss_mb(pid)
    return report


def run(artifacts: Path, total: int, concurrency: int) -> LoadReport:
    """Start sae-serve with its defaults on a free loopback port, load it, stop it."""
    expected = expectations(artifacts)
    server = start_sae_serve(artifacts, {"SAE_LOG_LEVEL": "warning"}, ready_within=60)
    try:
        return asyncio.run(load(server.url, server.process.pid, total, concurrency, expected))
    finally:
        server.stop()
