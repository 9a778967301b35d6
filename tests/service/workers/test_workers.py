"""Several worker processes behind one port (SAE_WORKERS=2), on a real `sae-serve` (slow)."""

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from models import SAEConfig, StackedAutoencoder, save_checkpoint
from service.workers.main import usable_cores
from tests.checkpoints import make_card
from tests.servers import start_server
from tests.service.workers.processes import workers_of

pytestmark = pytest.mark.slow
PIXELS = np.zeros((1, 28, 28), np.uint8).tobytes()
RAW = {"Content-Type": "application/octet-stream"}


class Logs:
    """The server's JSON log lines, read from the file it writes them to."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def lines(self) -> list[dict[str, Any]]:
        text = self.path.read_text(errors="replace") if self.path.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line.startswith("{") and line.endswith("}")]

    def wait_for_started_workers(self, count: int) -> None:
        deadline = time.monotonic() + 60
        while len({x["pid"] for x in self.lines if x["message"] == "Application startup complete."}) < count:
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.1)

    def after_stop(self) -> list[dict[str, Any]]:
        return self.lines


def serve(artifacts: Path, **env: str) -> tuple[subprocess.Popen[bytes], str, Logs]:
    log = artifacts.parent / "server.log"
    process, url = start_server(artifacts, log_file=log, **env)
    return process, url, Logs(log)


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=40)


def classify_many(url: str, count: int, clients: int = 8) -> list[int]:
    statuses: list[int] = []

    def client(share: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            for _ in range(share):
                statuses.append(http.post("/classify", content=PIXELS, headers=RAW).status_code)

    threads = [threading.Thread(target=client, args=(count // clients,)) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def classify_count(url: str) -> float:
    lines = httpx.get(f"{url}/metrics", timeout=10).text.splitlines()
    return sum(float(x.split()[-1]) for x in lines if x.startswith("sae_requests_total{") and '"/classify"' in x)


def test_metrics_count_every_workers_requests_and_logs_name_the_worker(tiny_artifacts: Path) -> None:
    process, url, logs = serve(tiny_artifacts, SAE_WORKERS="2")
    logs.wait_for_started_workers(2)
    try:
        assert len(workers_of(process.pid)) == 2
        assert classify_many(url, 80) == [200] * 80
        assert [classify_count(url) for _ in range(6)] == [80.0] * 6  # whichever worker answers /metrics
    finally:
        assert stop(process) == 0
    lines = logs.after_stop()
    served_by = {line["pid"] for line in lines if line.get("route") == "/classify"}
    assert len(served_by) == 2 and process.pid not in served_by
    threads = {line["pid"]: line["message"] for line in lines if line["message"].startswith("worker of ")}
    assert threads == {pid: f"worker of 2: {max(1, usable_cores() // 2)} intra-op threads" for pid in served_by}


@pytest.mark.skipif(usable_cores() < 2, reason="on one core the default is one process, with no workers")
def test_by_default_one_worker_per_core_each_with_its_share_of_the_threads(tiny_artifacts: Path) -> None:
    cores = usable_cores()
    process, url, logs = serve(tiny_artifacts, SAE_WORKERS="0")
    logs.wait_for_started_workers(cores)
    try:
        assert len(workers_of(process.pid)) == cores
        assert classify_many(url, 8) == [200] * 8
    finally:
        assert stop(process) == 0
    threads = {line["pid"]: line["message"] for line in logs.after_stop() if line["message"].startswith("worker of ")}
    assert sorted(threads.values()) == [f"worker of {cores}: 1 intra-op threads"] * cores


def test_sighup_and_admin_reload_reach_every_worker(tiny_artifacts: Path) -> None:
    process, url, logs = serve(tiny_artifacts, SAE_WORKERS="2", SAE_API_KEYS="admin")
    logs.wait_for_started_workers(2)
    key = {"X-API-Key": "admin"}

    def served_sha() -> set[str]:
        shas = set()
        for _ in range(12):  # a new connection each time, so both workers answer
            models = httpx.get(f"{url}/models", headers=key, timeout=10).json()["models"]
            shas.add(next(m["weights_sha256"] for m in models if m["name"] == "mnist"))
        return shas

    def replace_mnist(seed: int) -> str:
        torch.manual_seed(seed)
        card = save_checkpoint(
            StackedAutoencoder(SAEConfig()), make_card("mnist", [str(d) for d in range(10)]), tiny_artifacts / "mnist"
        )
        return card.weights_sha256

    def every_worker_serves(sha: str) -> None:
        deadline = time.monotonic() + 30
        while served_sha() != {sha}:
            assert time.monotonic() < deadline, "not every worker reloaded"
            time.sleep(0.2)

    try:
        first = served_sha()
        new = replace_mnist(99)
        assert new not in first
        os.kill(process.pid, signal.SIGHUP)
        every_worker_serves(new)
        newer = replace_mnist(100)
        answer = httpx.post(f"{url}/admin/reload", headers=key, timeout=30).json()
        assert answer["swapped"] and answer["workers"] == 2
        every_worker_serves(newer)
    finally:
        assert stop(process) == 0
    reloaded = {line["pid"] for line in logs.after_stop() if str(line["message"]).startswith("models reloaded")}
    assert len(reloaded) == 2


@pytest.mark.parametrize("workers", ["1", "2"])
def test_with_sighup_reloading_off_sighup_is_ignored_and_admin_reload_still_reaches_every_worker(
    tiny_artifacts: Path, workers: str
) -> None:
    process, url, logs = serve(tiny_artifacts, SAE_WORKERS=workers, SAE_API_KEYS="admin", SAE_RELOAD_ON_SIGHUP="false")
    if workers != "1":
        logs.wait_for_started_workers(int(workers))
    key = {"X-API-Key": "admin"}
    try:
        pids = workers_of(process.pid)
        os.kill(process.pid, signal.SIGHUP)
        time.sleep(1)
        assert process.poll() is None and workers_of(process.pid) == pids  # nothing ended, nothing replaced
        assert httpx.post(f"{url}/admin/reload", headers=key, timeout=30).json()["swapped"]
    finally:
        assert stop(process) == 0
    lines = logs.after_stop()
    assert any(line["message"] == "SIGHUP ignored: SAE_RELOAD_ON_SIGHUP is off" for line in lines)
    reloaded = {line["pid"] for line in lines if str(line["message"]).startswith("models reloaded")}
    assert len(reloaded) == int(workers)


def test_a_dead_worker_is_replaced_and_only_its_own_requests_are_lost(tiny_artifacts: Path) -> None:
    process, url, logs = serve(tiny_artifacts, SAE_WORKERS="2")
    logs.wait_for_started_workers(2)
    failures: list[str] = []
    sent = [0]
    running = threading.Event()
    running.set()

    def client() -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while running.is_set():
                try:
                    status = http.post("/classify", content=PIXELS, headers=RAW).status_code
                    if status != 200:
                        failures.append(str(status))
                except httpx.HTTPError as e:
                    failures.append(repr(e))
                sent[0] += 1

    clients = [threading.Thread(target=client) for _ in range(4)]
    try:
        victim, survivor = workers_of(process.pid)
        for thread in clients:
            thread.start()
        time.sleep(1)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while not set(workers_of(process.pid)) - {survivor, victim}:  # the victim may linger a moment
            assert time.monotonic() < deadline, "the dead worker was not replaced"
            time.sleep(0.2)
        (replacement,) = set(workers_of(process.pid)) - {survivor, victim}
        logs.wait_for_started_workers(3)  # the first two and the replacement
        running.clear()
        for thread in clients:
            thread.join(timeout=30)
        assert classify_many(url, 80) == [200] * 80  # new connections, some to the replacement
    finally:
        running.clear()
        assert stop(process) == 0
    assert len(failures) <= 4, failures  # at most the requests its 4 clients had in flight on it
    assert sent[0] > 100
    assert any(line.get("pid") == replacement and line.get("route") == "/classify" for line in logs.after_stop())
