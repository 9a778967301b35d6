"""Fixtures shared by every test package: tiny IDX data sets and tiny checkpoints."""

import gzip
import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from tests.checkpoints import write_tiny_artifacts
from tests.datasets import idx_bytes, tiny_arrays
from training import data as data_module
from training.data import FILES


@pytest.fixture
def tiny_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data folder holding a tiny 'mnist' (raw files) and 'fashion-mnist' (.gz files) whose md5s are registered."""
    root = tmp_path / "data"
    for name, compress in (("mnist", False), ("fashion-mnist", True)):
        folder = root / name
        folder.mkdir(parents=True)
        md5s = []
        for file, array in zip(FILES, tiny_arrays(), strict=True):
            raw = idx_bytes(array)
            md5s.append(hashlib.md5(raw).hexdigest())
            target = folder / (f"{file}.gz" if compress else file)
            target.write_bytes(gzip.compress(raw) if compress else raw)
        spec = data_module.DATASETS[name]
        tiny = replace(spec, md5=(md5s[0], md5s[1], md5s[2], md5s[3]), sources=("existing",))
        monkeypatch.setitem(data_module.DATASETS, name, tiny)
    monkeypatch.setenv("SAE_DATA_DIR", str(root))
    return root


@pytest.fixture
def tiny_artifacts(tmp_path: Path) -> Path:
    """An artifacts folder with untrained but valid checkpoints for both data sets."""
    return write_tiny_artifacts(tmp_path / "artifacts")
