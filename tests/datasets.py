"""Tiny data sets in the IDX format: learnable toy images with their labels, and the IDX encoding."""

import numpy as np

TINY_TRAIN = 256
TINY_TEST = 64


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def tiny_arrays(seed: int = 0) -> list[np.ndarray]:
    """Learnable toy images: each class lights up its own horizontal band of pixels."""
    rng = np.random.default_rng(seed)
    out = []
    for count in (TINY_TRAIN, TINY_TEST):
        labels = rng.integers(0, 10, count).astype(np.uint8)
        images = rng.integers(0, 40, (count, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 + 2 * label : 4 + 2 * label, 4:24] = 255
        out += [images, labels]
    return out
