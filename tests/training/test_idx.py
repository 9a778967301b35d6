import gzip
from pathlib import Path

import numpy as np
import pytest

from tests.datasets import idx_bytes
from training.idx import IDXError, check_split, parse_idx, read_idx_bytes


def test_reads_raw_and_gzip_files_alike(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(array))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(array)))
    for path in (tmp_path / "a", tmp_path / "a.gz"):
        tensor = parse_idx(read_idx_bytes(path), str(path))
        assert tensor.shape == (2, 3, 4)
        assert np.array_equal(tensor.numpy(), array)


def test_bad_magic_number_is_refused() -> None:
    data = bytearray(idx_bytes(np.zeros((2, 2), np.uint8)))
    data[2] = 0x0D  # float elements
    with pytest.raises(IDXError, match="bad magic number"):
        parse_idx(bytes(data))


def test_too_short_and_truncated_header_are_refused() -> None:
    with pytest.raises(IDXError, match="too short"):
        parse_idx(b"\x00\x00")
    with pytest.raises(IDXError, match="truncated header"):
        parse_idx(bytes([0, 0, 8, 3]) + (5).to_bytes(4, "big"))


def test_truncated_payload_and_trailing_bytes_are_refused() -> None:
    data = idx_bytes(np.zeros((4, 28, 28), np.uint8))
    with pytest.raises(IDXError, match="truncated: header declares shape \\[4, 28, 28\\]"):
        parse_idx(data[:-10])
    with pytest.raises(IDXError, match="trailing bytes"):
        parse_idx(data + b"\x00")


def test_damaged_gzip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((100, 28, 28), np.uint8)))[:50])
    with pytest.raises(IDXError, match="gzip data is damaged or truncated"):
        read_idx_bytes(path)


def test_mismatched_image_and_label_counts_are_refused(tmp_path: Path) -> None:
    (tmp_path / "images").write_bytes(idx_bytes(np.zeros((5, 28, 28), np.uint8)))
    (tmp_path / "labels").write_bytes(idx_bytes(np.zeros((4,), np.uint8)))
    with pytest.raises(IDXError, match=r"images holds 5 images but .*labels holds 4 labels"):
        images, labels = (parse_idx(read_idx_bytes(tmp_path / name), name) for name in ("images", "labels"))
        check_split(images, labels, "images", "labels")
