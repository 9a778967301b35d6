"""How many worker processes `sae-serve` starts (fast)."""

import subprocess
from pathlib import Path

import pytest

from service import main
from service.settings import Settings


def probe_answering(code: int, calls: list[list[str]]):  # type: ignore[no-untyped-def]
    def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, code)

    return run


def test_an_explicit_count_and_the_device_choose_without_asking_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(main.subprocess, "run", probe_answering(0, calls))
    assert main.worker_count(Settings(workers=3, device="cpu")) == 3
    assert main.worker_count(Settings(workers=0, device="cpu")) == main.usable_cores()
    assert main.worker_count(Settings(workers=0, device="cuda")) == 1
    monkeypatch.setattr(main, "NVIDIA_DRIVER_PATHS", ("/nonexistent/nvidiactl",))
    assert main.worker_count(Settings(workers=0, device="auto")) == main.usable_cores()  # no driver: no CUDA
    assert calls == []


@pytest.mark.parametrize(("probe_exit", "expected"), [(0, 1), (1, None)], ids=["CUDA", "driver but no CUDA"])
def test_with_a_driver_auto_asks_torch_in_another_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, probe_exit: int, expected: int | None
) -> None:
    calls: list[list[str]] = []
    (tmp_path / "nvidiactl").touch()
    monkeypatch.setattr(main, "NVIDIA_DRIVER_PATHS", (str(tmp_path / "nvidiactl"),))
    monkeypatch.setattr(main.subprocess, "run", probe_answering(probe_exit, calls))
    assert main.worker_count(Settings(workers=0, device="auto")) == (expected or main.usable_cores())
    assert len(calls) == 1 and calls[0][-1] == main.CUDA_PROBE
