"""Reader for the IDX format of MNIST-style data sets, raw or gzip-compressed."""

import gzip
from pathlib import Path

import numpy as np
import torch

# The third byte of the magic number names the element type; MNIST-style files use only unsigned bytes.
_UBYTE = 0x08


class IDXError(ValueError):
    """A file that is not a well-formed IDX file of unsigned bytes."""


def read_idx_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise IDXError(f"{path}: gzip data is damaged or truncated ({e})") from e
    return data


def parse_idx(data: bytes, name: str = "<bytes>") -> torch.Tensor:
    """Parse IDX bytes into a uint8 tensor of the shape the header declares."""
    if len(data) < 4:
        raise IDXError(f"{name}: {len(data)} bytes is too short for an IDX header")
    if data[0] != 0 or data[1] != 0 or data[2] != _UBYTE:
        raise IDXError(
            f"{name}: bad magic number {data[:4].hex()}; expected 0000 08 followed by the number of dimensions"
        )
    ndim = data[3]
    if ndim == 0:
        raise IDXError(f"{name}: header declares zero dimensions")
    header_end = 4 + 4 * ndim
    if len(data) < header_end:
        raise IDXError(f"{name}: truncated header ({len(data)} bytes, {header_end} needed for {ndim} dimensions)")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = int(np.prod(dims))
    payload = len(data) - header_end
    if payload != expected:
        kind = "truncated" if payload < expected else "has trailing bytes"
        raise IDXError(f"{name}: {kind}: header declares shape {dims} = {expected} bytes, file holds {payload}")
    array = np.frombuffer(data, dtype=np.uint8, offset=header_end).reshape(dims)
    return torch.from_numpy(array.copy())


def check_split(
    images: torch.Tensor, labels: torch.Tensor, images_name: str, labels_name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Refuse an image/label pair whose shapes or counts disagree."""
    if images.dim() != 3:
        raise IDXError(f"{images_name}: expected 3 dimensions (count, rows, cols), got {images.dim()}")
    if labels.dim() != 1:
        raise IDXError(f"{labels_name}: expected 1 dimension (count), got {labels.dim()}")
    if images.shape[0] != labels.shape[0]:
        raise IDXError(f"{images_name} holds {images.shape[0]} images but {labels_name} holds {labels.shape[0]} labels")
    return images, labels
