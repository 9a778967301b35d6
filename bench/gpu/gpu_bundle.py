"""Pack what bench/gpu/gpu_check.py needs on a GPU machine that has PyTorch but no package index.

    .venv/bin/python -m bench.gpu.gpu_bundle [--out .bundle] [--python-version 3.12]

Into OUT: wheels/ (the service's packages that a PyTorch image usually lacks, at the versions this
venv runs, built for the target Python on x86-64 Linux), data/ (both data sets, gzip-compressed) and
reference/ (the CPU-trained checkpoints from ./artifacts). bench/gpu/gpu_device.sh installs and runs it.
"""

import argparse
import gzip
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from bench.harness import ROOT
from models.layout import checkpoint_files, newest_version
from training.data import DATASETS, FILES, default_data_dir

# The service's dependencies beyond torch, numpy, pillow, safetensors, prometheus-client, httpx,
# anyio, click, h11 and uvloop, which PyTorch GPU images carry (typing-extensions too, but pydantic needs a recent one).
PACKAGES = (
    "fastapi",
    "fastapi-offline",
    "opentelemetry-api",
    "starlette",
    "pydantic",
    "pydantic-core",
    "pydantic-settings",
    "python-dotenv",
    "annotated-types",
    "typing-inspection",
    "typing-extensions",
    "uvicorn",
    "httptools",
    "orjson",
    "python-multipart",
)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def download_wheels(target: Path, python_version: str) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("*.whl"):
        old.unlink()
    pins = [f"{name}=={version(name)}" for name in PACKAGES]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", python_version, "--implementation", "cp", "--dest", str(target)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    subprocess.run([*command, *pins], check=True)
    return sorted(target.glob("*.whl"))


def pack_data(target: Path, data_dir: Path) -> None:
    for name in DATASETS:
        for file in FILES:
            source = data_dir / name / file
            packed = target / name / f"{file}.gz"
            if packed.exists() and packed.stat().st_mtime >= source.stat().st_mtime:
                continue
            packed.parent.mkdir(parents=True, exist_ok=True)
            packed.write_bytes(gzip.compress(source.read_bytes(), compresslevel=9, mtime=0))


def copy_reference(target: Path, artifacts: Path) -> None:
    for name in DATASETS:
        (target / name).mkdir(parents=True, exist_ok=True)
        # The device serves them in torch, and checks no /similar: their ONNX graphs (6.7 MB each) and reference sets
        # (about 100 MB) stay out of the bundle's carry budget.
        for source in checkpoint_files(newest_version(artifacts / name), graph=False, reference=False):
            shutil.copy2(source, target / name / source.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".bundle")
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python (default: 3.12)")
    parser.add_argument("--data-dir", type=Path, default=None, help="(default: $SAE_DATA_DIR or ./data)")
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts", help="the reference checkpoints")
    args = parser.parse_args()
    wheels = download_wheels(args.out / "wheels", args.python_version)
    pack_data(args.out / "data", args.data_dir or default_data_dir())
    copy_reference(args.out / "reference", args.artifacts)
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"{args.out}: {len(wheels)} wheels, both data sets, the reference checkpoints; {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
