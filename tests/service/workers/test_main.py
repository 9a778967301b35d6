"""How many worker processes `sae-serve` starts (fast)."""

import subprocess
import sys
from pathlib import Path

import pytest

from service.core import runtime
from service.core.settings import Settings
from service.workers import main


def probe_answering(code: int, stdout: str, calls: list[list[str]]):  # type: ignore[no-untyped-def]
    def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, code, stdout=stdout)

    return run


def test_an_explicit_count_and_the_cpu_choose_without_asking_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(main.subprocess, "run", probe_answering(0, "143771\n", calls))
    assert main.worker_count(Settings(workers=3, device="cpu")) == 3
    assert main.worker_count(Settings(workers=3, device="cuda")) == 3
    assert main.worker_count(Settings(workers=0, device="cpu")) == main.usable_cores()
    monkeypatch.setattr(runtime, "NVIDIA_DRIVER_PATHS", ("/nonexistent/nvidiactl",))
    assert main.worker_count(Settings(workers=0, device="auto")) == main.usable_cores()  # no driver: no CUDA
    assert main.worker_count(Settings(workers=0, device="cuda")) == 1  # that one worker says why it cannot start
    assert calls == []


@pytest.mark.parametrize(
    ("device", "probe_exit", "stdout", "cores", "expected"),
    [
        ("auto", 0, "143771\n", 16, 8),  # an H200 on 16 cores: half the cores
        ("cuda", 0, "143771\n", 16, 8),
        ("auto", 0, "8192\n", 16, 4),  # an 8 GiB card: at most half its memory, 832 MiB a worker
        ("auto", 0, "143771\n", 1, 1),
        ("auto", 0, "0\n", 16, 16),  # a driver but no usable CUDA: one per core on the CPU
        ("auto", 1, "", 16, 16),  # torch failed to answer
        ("cuda", 1, "", 16, 1),
    ],
)
def test_with_a_driver_the_gpu_memory_is_asked_in_another_process(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    device: str,
    probe_exit: int,
    stdout: str,
    cores: int,
    expected: int,
) -> None:
    calls: list[list[str]] = []
    (tmp_path / "nvidiactl").touch()
    monkeypatch.setattr(runtime, "NVIDIA_DRIVER_PATHS", (str(tmp_path / "nvidiactl"),))
    monkeypatch.setattr(main, "usable_cores", lambda: cores)
    monkeypatch.setattr(main.subprocess, "run", probe_answering(probe_exit, stdout, calls))
    assert main.worker_count(Settings(workers=0, device=device)) == expected  # type: ignore[arg-type]
    assert len(calls) == 1 and calls[0][-1] == main.CUDA_PROBE


def test_the_probe_runs_and_answers_the_gpu_memory() -> None:
    import torch

    done = subprocess.run([sys.executable, "-c", main.CUDA_PROBE], capture_output=True, text=True, check=True)
    memory = torch.cuda.get_device_properties(0).total_memory // 2**20 if torch.cuda.is_available() else 0
    assert int(done.stdout) == memory
    assert main.cuda_memory_mib() == memory


def test_onnxruntime_serves_on_the_cpu_so_a_gpu_host_gets_a_worker_per_core_and_no_probe(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[list[str]] = []
    (tmp_path / "nvidiactl").touch()
    monkeypatch.setattr(runtime, "NVIDIA_DRIVER_PATHS", (str(tmp_path / "nvidiactl"),))
    monkeypatch.setattr(main.subprocess, "run", probe_answering(0, "143771\n", calls))
    assert main.worker_count(Settings(workers=0, device="auto", runtime="onnxruntime")) == main.usable_cores()
    assert main.runtimes_to_preload(Settings(device="auto", runtime="onnxruntime")) == ["onnxruntime"]
    assert calls == []
