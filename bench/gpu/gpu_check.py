"""GPU check: train both models on a device, check CPU/GPU parity, serve them over HTTP there, and measure it.

    python -m bench.gpu.gpu_check --device cuda --out DIR [--reference artifacts] [--data-dir data] [--quick]

1. trains both models with the `default` recipe on the device (seconds per stage, accuracy, memory);
2. parity: each reference checkpoint (./artifacts, trained on the CPU) evaluated on the device against
   the CPU, and each device-trained checkpoint evaluated on the CPU against the device: the same label
   for every test image and class probabilities within 1e-4;
3. serves all four checkpoints with `sae-serve` on a loopback port, once with SAE_DEVICE set to the
   device and once on the CPU, posts every test image of each model's card, and checks that the HTTP
   accuracy equals the card's;
4. measures the service on the device: the batch paths (256 images a request, raw uint8 and PNG)
   against the in-process forward and PNG-decode ceilings, /classify with one PNG at 1 and 64
   connections (one worker, then four), and the GPU memory each server holds.

Writes DIR/gpu.json (device, driver, versions, every figure and check) and prints a summary; exits 1
if any check failed. `--quick` is the dry run for a machine without a GPU (`--device cpu --quick`):
two batches a training stage, 1-second load runs; every check still runs.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from bench.harness import MULTIPART_TYPE, ROOT, Server, multipart, png_bytes, start_sae_serve
from models import load_checkpoint, resolve_device, to_model_input
from models.layout import checkpoint_files, checkpoint_versions, newest_version
from service.core import forward
from service.core.imaging import decode_image
from service.core.repository import ServedModel
from service.core.run_torch import TorchRunner
from training.data import DATASETS, Dataset, load_dataset
from training.recipes import recipe_for
from training.train import train

PROBABILITY_TOLERANCE = 1e-4
# A device-trained model may land this far under the reference's accuracy (other random streams, same recipe).
ACCURACY_SLACK = 0.005
BATCH = 256
REFERENCE_SUFFIX = "-reference"


@dataclass
class Report:
    checks: list[dict[str, Any]] = field(default_factory=list)
    sections: dict[str, Any] = field(default_factory=dict)

    def check(self, name: str, passed: bool, detail: str) -> None:
        self.checks.append({"name": name, "passed": bool(passed), "detail": detail})
        print(f"[{'ok' if passed else 'FAIL'}] {name}: {detail}", flush=True)

    def section(self, name: str, run: Callable[[], Any]) -> Any:
        """Run one part; an exception fails it as a check and the rest still run."""
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            value = run()
        except Exception as e:
            self.check(f"{name} ran", False, f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
            value = None
        self.sections.setdefault("section_seconds", {})[name] = round(time.perf_counter() - start, 2)
        if value is not None:
            self.sections[name] = value
        return value


def run_text(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def environment(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_runtime": torch.version.cuda,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {
            "gpu": props.name,
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "compute_capability": f"{props.major}.{props.minor}",
            "multiprocessors": props.multi_processor_count,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        }
        smi = run_text(["nvidia-smi", "--query-gpu=driver_version,name,memory.total", "--format=csv,noheader"])
        info["nvidia_smi"] = smi
        info["driver"] = smi.split(",")[0].strip() if smi else None
    return info


def train_both(
    datasets: dict[str, Dataset], device: torch.device, quick: bool, reference: Path, served: Path, report: Report
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for name, data in datasets.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        result = train(data, "greedy", recipe_for("default", name), 0, device, dry_run=quick)
        # torch serves on CUDA, and the device has no onnx package to write the graph with
        result.save(served / name, graph=False)
        accuracy = result.metrics["test_accuracy"]
        stages = {s["name"]: s["seconds"] for s in result.card.provenance["stages"]}
        reference_card = load_checkpoint(reference / name).card
        reference_accuracy = reference_card.metrics.test_accuracy
        figures[name] = {
            "training_seconds": result.card.provenance["training_seconds"],
            "stage_seconds": stages,
            "test_accuracy": accuracy,
            "test_examples": result.metrics["test_examples"],
            "reference_test_accuracy": reference_accuracy,
            "reference_trained_on": reference_card.provenance.get("device"),
            "peak_gpu_memory_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
            if device.type == "cuda"
            else None,
        }
        print(f"{name}: trained in {figures[name]['training_seconds']} s, test accuracy {100 * accuracy:.2f}%")
        if quick:
            report.check(f"{name} trains on {device}", (served / name / "card.json").is_file(), "dry run saved")
        else:
            report.check(
                f"{name} trains on {device}",
                accuracy >= reference_accuracy - ACCURACY_SLACK,
                f"{100 * accuracy:.2f}% against the reference's {100 * reference_accuracy:.2f}% "
                f"(allowed {100 * ACCURACY_SLACK:.1f} points under)",
            )
    return figures


@torch.inference_mode()
def outputs(directory: Path, device: torch.device, pixels: torch.Tensor) -> dict[str, np.ndarray]:
    model = load_checkpoint(directory, device).model.eval()
    x = to_model_input(pixels).to(device)
    code = model.encode(x)
    return {
        "probabilities": model.classify_code(code).exp().cpu().numpy(),
        "embeddings": code.cpu().numpy(),
        "reconstructions": model.decode(code).cpu().numpy(),
    }


def parity(
    datasets: dict[str, Dataset], device: torch.device, reference: Path, served: Path, report: Report
) -> dict[str, Any]:
    """The same checkpoint on the CPU and on the device: labels equal, probabilities within tolerance."""
    figures: dict[str, Any] = {}
    cpu = torch.device("cpu")
    for name, data in datasets.items():
        for label, directory in (("reference", reference / name), ("device-trained", served / name)):
            if not checkpoint_versions(directory):
                continue
            on_cpu = outputs(directory, cpu, data.test_images)
            on_device = outputs(directory, device, data.test_images)
            labels_cpu = on_cpu["probabilities"].argmax(1)
            labels_device = on_device["probabilities"].argmax(1)
            differ = int((labels_cpu != labels_device).sum())
            worst = {key: float(np.abs(on_cpu[key] - on_device[key]).max()) for key in on_cpu}
            figures[f"{name} {label}"] = {"images": len(labels_cpu), "labels_differ": differ, "max_abs_diff": worst}
            report.check(
                f"{name} {label}: CPU and {device} agree",
                differ == 0 and worst["probabilities"] <= PROBABILITY_TOLERANCE,
                f"{len(labels_cpu):,} test images, {differ} labels differ, probabilities within "
                f"{worst['probabilities']:.1e} (tolerance {PROBABILITY_TOLERANCE:g}), "
                f"embeddings {worst['embeddings']:.1e}, reconstructions {worst['reconstructions']:.1e}",
            )
    return figures


def serve(artifacts: Path, device: str, workers: int, log: Path) -> Server:
    """`sae-serve` on a free loopback port; CUDA may take a while to start."""
    settings = {"SAE_DEVICE": device, "SAE_WORKERS": str(workers), "SAE_LOG_LEVEL": "warning", "SAE_LOG_FORMAT": "text"}
    # Throughput, not overload: closed loops of up to 16 connections of 256 images cannot overload a server, but one
    # worker may get more than its share of them and reach the default bound of pending images.
    settings["SAE_MAX_PENDING_IMAGES"] = "0"
    # torch on both devices: the check compares CUDA with the CPU in one runtime (the checkpoints carry no graph here)
    settings["SAE_RUNTIME"] = "torch"
    return start_sae_serve(artifacts, settings, log, ready_within=180)


def wait_for_workers(server: Server, workers: int, device: str) -> None:
    """/health/ready answers once one worker is up; give the others time to load their models too."""
    if workers == 1:
        return
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pids = server.pids()
        on_gpu = gpu_processes(pids) if device == "cuda" else 0
        if on_gpu >= workers:
            return
        # Where nvidia-smi lists no processes (or on the CPU), wait until all have had time to load.
        if on_gpu == 0 and len(pids) > workers and time.monotonic() - server.started > 30:
            return
        time.sleep(0.5)
    log = server.log.read_text(errors="replace")[-3000:] if server.log else ""
    raise RuntimeError(f"{workers} workers were not all up within 120 s: {log}")


def gpu_apps(pids: set[int]) -> dict[int, float]:
    """nvidia-smi's GPU memory (MiB) of each of these processes that holds some."""
    apps = run_text(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
    held: dict[int, float] = {}
    for line in apps.splitlines():
        pid, _, used = line.partition(",")
        if pid.strip().isdigit() and int(pid) in pids:
            held[int(pid)] = float(used)
    return held


def gpu_processes(pids: set[int]) -> int:
    return len(gpu_apps(pids))


def gpu_memory_mib(pids: set[int]) -> dict[str, Any]:
    """GPU memory the server's processes hold, each and together, and the whole card's use."""
    held = gpu_apps(pids)
    total = run_text(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"])
    return {
        "server_mib": sum(held.values()) if held else None,
        "per_process_mib": sorted(held.values()),
        "card_used_mib": float(total.splitlines()[0]) if total else None,
    }


def http_labels(client: httpx.Client, url: str, model: str, pixels: np.ndarray) -> np.ndarray:
    labels: list[int] = []
    for start in range(0, len(pixels), BATCH):
        body = np.ascontiguousarray(pixels[start : start + BATCH]).tobytes()
        answer = client.post(
            f"{url}/classify",
            params={"model": model, "top_k": 1},
            content=body,
            headers={"Content-Type": "application/octet-stream"},
        )
        answer.raise_for_status()
        labels += [p["label"] for p in answer.json()["predictions"]]
    return np.array(labels)


def http_accuracy(
    url: str, where: str, artifacts: Path, datasets: dict[str, Dataset], report: Report
) -> dict[str, Any]:
    """Every test image the card counted, posted in batches; the HTTP accuracy must equal the card's."""
    figures: dict[str, Any] = {}
    with httpx.Client(timeout=120) as client:
        for folder in sorted(p for p in artifacts.iterdir() if checkpoint_versions(p)):
            card = load_checkpoint(folder).card
            data = datasets[card.dataset]
            count = card.metrics.test_examples or len(data.test_labels)
            start = time.perf_counter()
            labels = http_labels(client, url, folder.name, data.test_images[:count].numpy())
            seconds = time.perf_counter() - start
            correct = int((labels == data.test_labels[:count].numpy()).sum())
            card_correct = round(card.metrics.test_accuracy * count)
            figures[folder.name] = {
                "images": count,
                "http_accuracy": correct / count,
                "card_accuracy": card.metrics.test_accuracy,
                "seconds": round(seconds, 3),
            }
            report.check(
                f"{folder.name} over HTTP on {where}",
                correct == card_correct,
                f"{correct:,}/{count:,} right ({100 * correct / count:.2f}%), "
                f"card {100 * card.metrics.test_accuracy:.2f}%",
            )
    return figures


def ceilings(
    directory: Path, device: torch.device, pixels: np.ndarray, pngs: list[bytes], quick: bool
) -> dict[str, float]:
    """In-process rates on this machine: /classify's forward on the device (256 and 1 image a call), PNG decoding."""
    checkpoint = load_checkpoint(directory, device)
    served = ServedModel(
        directory.name, checkpoint.card, TorchRunner(checkpoint.model, checkpoint.card, checkpoint.judge, device)
    )
    repeats, rounds = (5, 2) if quick else (50, 5)
    best = {
        "forward_256_images_per_s": 0.0,
        "forward_4096_images_per_s": 0.0,
        "forward_1_calls_per_s": 0.0,
        "png_decode_images_per_s": 0.0,
    }
    large = np.tile(pixels, (4096 // len(pixels), 1, 1))
    forward.classify(served, pixels)  # warm-up
    forward.classify(served, large)
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(max(1, repeats // 10)):
            forward.classify(served, large)
        best["forward_4096_images_per_s"] = max(
            best["forward_4096_images_per_s"], max(1, repeats // 10) * len(large) / (time.perf_counter() - start)
        )
        start = time.perf_counter()
        for _ in range(repeats):
            forward.classify(served, pixels)
        best["forward_256_images_per_s"] = max(
            best["forward_256_images_per_s"], repeats * len(pixels) / (time.perf_counter() - start)
        )
        start = time.perf_counter()
        for _ in range(repeats * 4):
            forward.classify(served, pixels[:1])
        best["forward_1_calls_per_s"] = max(best["forward_1_calls_per_s"], repeats * 4 / (time.perf_counter() - start))
        start = time.perf_counter()
        for data in pngs:
            decode_image(data, 10**6)
        best["png_decode_images_per_s"] = max(
            best["png_decode_images_per_s"], len(pngs) / (time.perf_counter() - start)
        )
    return best


def load_run(url: str, body: Path, content_type: str, connections: int, seconds: float) -> dict[str, Any]:
    """bench/serving/httpload.py in its own processes, so that the client's work never shares this interpreter."""
    processes = max(1, min(connections, (os.cpu_count() or 2) // 4))
    command = [sys.executable, "-m", "bench.serving.httpload", url, "--body", str(body)]
    command += ["--content-type", content_type, "--connections", str(connections), "--seconds", str(seconds)]
    command += ["--processes", str(processes)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 120, check=True)
    return dict(json.loads(done.stdout))


def throughput(
    artifacts: Path,
    device: torch.device,
    data: Dataset,
    quick: bool,
    work: Path,
    report: Report,
    servers: list[tuple[str, int]],
) -> dict[str, Any]:
    """The ceilings, then each (SAE_DEVICE, SAE_WORKERS) server in turn under the same loads."""
    pixels = data.test_images[:BATCH].numpy()
    pngs = [png_bytes(p) for p in pixels]
    bodies = {
        "one_png": (work / "one.png", pngs[0], "image/png"),
        "batch_raw": (work / "batch.raw", pixels.tobytes(), "application/octet-stream"),
        "batch_png": (work / "batch.multipart", multipart(pngs), MULTIPART_TYPE),
    }
    for path, content, _ in bodies.values():
        path.write_bytes(content)
    seconds = 1.0 if quick else 5.0
    model = "mnist" if (artifacts / "mnist").is_dir() else f"mnist{REFERENCE_SUFFIX}"
    figures: dict[str, Any] = {"ceilings": ceilings(artifacts / model, device, pixels, pngs, quick), "servers": {}}
    for serve_device, workers in servers:
        label = f"{workers} worker(s)" if serve_device == device.type else f"{serve_device}, {workers} worker(s)"
        server = serve(artifacts, serve_device, workers, work / f"serve-{serve_device}-{workers}.log")
        try:
            wait_for_workers(server, workers, serve_device)
            url = f"{server.url}/classify?model={model}"
            cells: dict[str, Any] = {"ready_seconds": round(server.ready_seconds, 1)}
            load_run(url, *bodies["one_png"][::2], connections=16, seconds=1.0)  # warm-up
            plan = [("batch_raw", 8), ("batch_png", 8), ("one_png", 1), ("one_png", 64)]
            if label != "1 worker(s)":
                plan = [("batch_raw", 16), ("batch_png", 16), ("one_png", 64)]
            for body_name, connections in plan:
                path, _, content_type = bodies[body_name]
                cell = load_run(url, path, content_type, connections, seconds)
                if body_name != "one_png":
                    cell["images_per_s"] = cell["requests_per_s"] * BATCH
                cells[f"{body_name} c{connections}"] = cell
                report.check(
                    f"{label}, {body_name} at {connections} connections answers",
                    cell["requests"] > 0 and cell["errors"] == 0,
                    f"{cell['requests_per_s']:,.0f} req/s, p50 {cell['p50_ms']:.2f} ms, p99 {cell['p99_ms']:.2f} ms, "
                    f"{cell['requests']:,} answers, {cell['errors']} errors {cell['statuses']}",
                )
            if serve_device == "cuda":
                cells["gpu_memory"] = gpu_memory_mib(server.pids())
            figures["servers"][label] = cells
        finally:
            server.stop()
    one = figures["servers"].get("1 worker(s)")
    if one:
        ceiling = figures["ceilings"]
        figures["shares"] = {
            "batch_raw_of_forward": one["batch_raw c8"]["images_per_s"] / ceiling["forward_256_images_per_s"],
            "batch_png_of_png_decode": one["batch_png c8"]["images_per_s"] / ceiling["png_decode_images_per_s"],
        }
    return figures


def server_plan(spec: str) -> tuple[str, int]:
    """`4` (on the checked device) or `cpu:16`: one server of the throughput runs."""
    where, _, workers = spec.rpartition(":")
    if where not in ("", "cpu", "cuda") or not workers.isdigit() or int(workers) < 1:
        raise argparse.ArgumentTypeError(f"expected WORKERS or DEVICE:WORKERS, got {spec!r}")
    return where, int(workers)


def prepare_artifacts(reference: Path, served: Path) -> None:
    """The device-trained models serve as `mnist` and `fashion-mnist`, the reference ones as `<name>-reference`."""
    for name in DATASETS:
        target = served / f"{name}{REFERENCE_SUFFIX}"
        target.mkdir(parents=True, exist_ok=True)
        for source in checkpoint_files(newest_version(reference / name), graph=False, reference=False):  # as bundled
            shutil.copy2(source, target / source.name)


def summary(result: dict[str, Any]) -> None:
    env = result["environment"]
    print()
    print(
        f"device {env.get('gpu', env['device'])}, driver {env.get('driver')}, torch {env['torch']}, "
        f"Python {env['python']}, {env['cpu_count']} CPUs"
    )
    for name, fig in (result.get("training") or {}).items():
        print(
            f"train {name}: {fig['training_seconds']} s {fig['stage_seconds']}, "
            f"accuracy {100 * fig['test_accuracy']:.2f}%"
        )
    tp = result.get("throughput")
    if tp:
        c = tp["ceilings"]
        print(
            f"ceilings: forward {c['forward_256_images_per_s']:,.0f} img/s (256 a call), "
            f"{c['forward_4096_images_per_s']:,.0f} img/s (4,096 a call), "
            f"{c['forward_1_calls_per_s']:,.0f} calls/s (1 image), PNG decode {c['png_decode_images_per_s']:,.0f} img/s"
        )
        print("| server | load | req/s | images/s | p50 ms | p99 ms | errors |")
        print("|---|---|---|---|---|---|---|")
        for server, cells in tp["servers"].items():
            for load, cell in cells.items():
                if isinstance(cell, dict) and "requests_per_s" in cell:
                    images = f"{cell['images_per_s']:,.0f}" if "images_per_s" in cell else ""
                    print(
                        f"| {server} | {load} | {cell['requests_per_s']:,.0f} | {images} | "
                        f"{cell['p50_ms']:.2f} | {cell['p99_ms']:.2f} | {cell['errors']} |"
                    )
            if "gpu_memory" in cells:
                print(f"{server}: GPU memory {cells['gpu_memory']}")
        print(f"shares: {tp.get('shares')}")
    failed = [c["name"] for c in result["checks"] if not c["passed"]]
    print(f"checks: {len(result['checks']) - len(failed)} passed, {len(failed)} failed {failed if failed else ''}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu.json")
    parser.add_argument(
        "--reference", type=Path, default=ROOT / "artifacts", help="reference checkpoints (default: ./artifacts)"
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="data sets (default: $SAE_DATA_DIR or ./data)")
    parser.add_argument("--quick", action="store_true", help="dry-run training and 1-second load runs")
    parser.add_argument(
        "--servers",
        type=server_plan,
        nargs="+",
        default=None,
        help="servers the throughput runs measure, WORKERS or DEVICE:WORKERS each (default: 1 4; --quick: 1 2)",
    )
    parser.add_argument("--throughput-only", action="store_true", help="only the ceilings and throughput runs")
    parser.add_argument("--json-name", default="gpu.json", help="file name of the results in --out")
    args = parser.parse_args()
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        print(f"gpu_check: {e}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    report = Report()
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"quick": args.quick, "environment": environment(device)}
    print(json.dumps(result["environment"]), flush=True)
    with tempfile.TemporaryDirectory(prefix="sae-gpu-check-") as tmp:
        work = Path(tmp)
        served = work / "artifacts"
        served.mkdir()
        datasets = {name: load_dataset(name, args.data_dir) for name in DATASETS}
        prepare_artifacts(args.reference, served)
        servers = [(where or device.type, n) for where, n in (args.servers or [("", 1), ("", 2 if args.quick else 4)])]
        if not args.throughput_only:
            check_all(datasets, device, args, served, work, report)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        report.section(
            "throughput", lambda: throughput(served, device, datasets["mnist"], args.quick, work, report, servers)
        )
    result.update(report.sections)
    result["checks"] = report.checks
    result["seconds"] = round(time.perf_counter() - started, 1)
    (args.out / args.json_name).write_text(json.dumps(result, indent=2) + "\n")
    summary(result)
    return 0 if report.checks and all(c["passed"] for c in report.checks) else 1


def check_all(
    datasets: dict[str, Dataset],
    device: torch.device,
    args: argparse.Namespace,
    served: Path,
    work: Path,
    report: Report,
) -> None:
    """Training, parity and HTTP accuracy."""
    report.section("training", lambda: train_both(datasets, device, args.quick, args.reference, served, report))
    report.section("parity", lambda: parity(datasets, device, args.reference, served, report))

    def accuracy_on(where: str) -> dict[str, Any]:
        server = serve(served, where, 1, work / f"accuracy-{where}.log")
        try:
            figures = http_accuracy(server.url, where, served, datasets, report)
            if where == "cuda":
                figures["gpu_memory"] = gpu_memory_mib(server.pids())
            return figures
        finally:
            server.stop()

    report.section(f"http_accuracy_{device.type}", lambda: accuracy_on(device.type))
    if device.type != "cpu":
        report.section("http_accuracy_cpu", lambda: accuracy_on("cpu"))


if __name__ == "__main__":
    sys.exit(main())
