"""Which runtime runs a model's pass (the pass itself: service/core/passes.py), chosen once for the server.

Two runtimes run the same pass (the preprocessing, the encoders, the decoder, the head with the card's temperature,
the reconstruction error and the out-of-distribution score): torch (service/core/run_torch.py) from the weights,
and ONNX Runtime (service/core/run_onnx.py) from the checkpoint's ONNX graph (models/graph.py). `SAE_RUNTIME`:

- `auto`: torch on CUDA; on the CPU ONNX Runtime where it is installed and the checkpoint has its graph, torch
  otherwise (a checkpoint without a graph, or a server without ONNX Runtime);
- `torch`: torch, on the device `SAE_DEVICE` chooses;
- `onnxruntime`: ONNX Runtime on the CPU; a checkpoint without its graph is not loaded, with the reason.

Neither runtime is imported before a model needs it: a server of ONNX graphs never imports torch.
"""

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from models.card import ModelCard
from models.errors import CheckpointError
from service.core.passes import Runner

RuntimeChoice = Literal["auto", "torch", "onnxruntime"]
RUNTIME_CHOICES: tuple[RuntimeChoice, ...] = ("auto", "torch", "onnxruntime")

# Without the NVIDIA driver's control device or proc entry, CUDA cannot be available: no need to import torch to ask.
NVIDIA_DRIVER_PATHS = ("/dev/nvidiactl", "/proc/driver/nvidia")


def nvidia_driver() -> bool:
    return any(Path(p).exists() for p in NVIDIA_DRIVER_PATHS)


def installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except ImportError:  # an import hook that refuses it
        return False


@dataclass(frozen=True)
class Placement:
    """Where and how the server runs its models: resolved once, from SAE_RUNTIME and SAE_DEVICE."""

    runtime: RuntimeChoice
    device: str  # "cpu" or "cuda"
    threads: int = 0  # intra-op threads per worker; 0: the runtime's default (every core)

    def runner(self, directory: Path, card: ModelCard) -> Runner:
        """The checkpoint's pass in this placement's runtime, its files checked against the card."""
        if self.runtime == "onnxruntime" or (
            self.runtime == "auto" and card.graph is not None and installed("onnxruntime")
        ):
            if card.graph is None:
                raise CheckpointError(
                    f"{directory}: the card names no ONNX graph (model.onnx), which SAE_RUNTIME=onnxruntime needs; "
                    "run `sae-train export` on the checkpoint"
                )
            from service.core.run_onnx import OnnxRunner

            return OnnxRunner(directory, card, self.threads)
        if not installed("torch"):
            raise CheckpointError(
                f"{directory}: the card names no ONNX graph and torch is not installed to run its weights; run "
                "`sae-train export` on the checkpoint"
            )
        from service.core.run_torch import TorchRunner

        return TorchRunner.load(directory, self.device, self.threads)


def limit_blas_threads(threads: int) -> None:
    """The nearest-neighbour search's matrix product runs in numpy's BLAS, whose pool takes every core in every
    process (and spins between calls): held to the worker's share, as the runtimes' own pools are (0: left as is)."""
    if threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads, user_api="blas")


def place(runtime: RuntimeChoice, device: Literal["auto", "cpu", "cuda"], threads: int = 0) -> Placement:
    """Resolve the runtime and device choices: CUDA needs torch and a GPU (refused otherwise, with the reason);
    ONNX Runtime serves on the CPU. Numpy's BLAS threads are held to `threads` as well."""
    if runtime not in RUNTIME_CHOICES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIME_CHOICES)}, got {runtime!r}")
    limit_blas_threads(threads)
    if runtime == "onnxruntime":
        if device == "cuda":
            raise ValueError(
                "SAE_RUNTIME=onnxruntime runs on the CPU; for SAE_DEVICE=cuda use SAE_RUNTIME=torch or auto"
            )
        if not installed("onnxruntime"):
            raise ValueError("SAE_RUNTIME=onnxruntime but the onnxruntime package is not installed")
        return Placement("onnxruntime", "cpu", threads)
    if runtime == "torch" and not installed("torch"):
        raise ValueError("SAE_RUNTIME=torch but torch is not installed (the torch extra; the sae-serve-cuda image)")
    if device == "cpu" or (device == "auto" and not (installed("torch") and nvidia_driver())):
        return Placement(runtime, "cpu", threads)
    if not installed("torch"):
        raise ValueError(f"SAE_DEVICE={device} with SAE_RUNTIME={runtime} needs torch, which is not installed")
    from models.device import resolve_device

    resolved = resolve_device(device).type
    return Placement("torch" if resolved == "cuda" else runtime, resolved, threads)
