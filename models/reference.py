"""The reference set: the training images' embeddings, labels and pixels, kept beside a checkpoint for the nearest-
neighbour search, and the search and the k-NN vote themselves.

Numpy only: training measures the vote with these functions and the service answers with them, so that what is
served is what was measured. The file is a safetensors file whose arrays the service maps from disk rather than
reads (numpy memory maps: the pages are the page cache's, shared by every worker that maps them).

The embedding is the code (the last encoder layer), scaled to unit length; the metric is cosine similarity, the
inner product of unit vectors, and a neighbour's distance is one minus it. On the validation split that metric
votes as well as the Euclidean distance of the raw codes (docs/benchmarks.md), and unit vectors are what embedding
consumers expect (OpenAI's embeddings are unit vectors too).
"""

import hashlib
import itertools
import json
import math
import mmap
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from safetensors.numpy import save

from models.card import Reference
from models.errors import CheckpointError
from models.layout import sha256_file, write_whole

SEARCH_CHUNK = 32  # queries a matrix product at most: a batch of 256 would hold 180 MB of scores and positions
TINY_NORM = 1e-12  # a code's length floor before scaling (no tanh code is near zero; an untrained model's might be)
# The arrays of the file: name -> (safetensors dtype, numpy dtype, rank).
ARRAYS = {
    "columns": ("F32", np.float32, 2),  # (dim, N): the unit vectors as columns
    "images": ("U8", np.uint8, 2),  # (N, 784): the pixels, to show a neighbour
    "labels": ("I64", np.int64, 1),  # (N,)
    "indices": ("I64", np.int64, 1),  # (N,): each image's index in its data set's split, ascending
}


@dataclass(frozen=True)
class ReferenceArrays:
    # (dim, N): the unit vectors as columns, the layout a query's matrix product reads fastest (a third faster than
    # rows for a batch of 16 queries: bench/serving/similar_bench.py)
    columns: NDArray[np.float32]
    images: NDArray[np.uint8]  # (N, 784)
    labels: NDArray[np.int64]  # (N,)
    indices: NDArray[np.int64]  # (N,) ascending

    @classmethod
    def of(
        cls,
        vectors: NDArray[np.float32],
        images: NDArray[np.uint8],
        labels: NDArray[np.int64],
        indices: NDArray[np.int64],
    ) -> "ReferenceArrays":
        """The set of these unit vectors (N, dim) and their images, labels and indices."""
        return cls(np.ascontiguousarray(vectors.T, dtype=np.float32), images, labels, indices)

    @property
    def vectors(self) -> NDArray[np.float32]:
        """(N, dim): a view of the columns, a vector a row."""
        return self.columns.T

    def __len__(self) -> int:
        return len(self.labels)

    def position(self, index: int) -> int | None:
        """Where the split's image `index` is in the set; None where the set does not hold it."""
        at = int(np.searchsorted(self.indices, index))
        return at if at < len(self.indices) and int(self.indices[at]) == index else None


def normalised(vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    """Each row scaled to unit length: the embedding as served and searched."""
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float32))
    scaled: NDArray[np.float32] = (vectors / np.maximum(norms, np.float32(TINY_NORM))[:, None]).astype(np.float32)
    return scaled


def nearest(
    columns: NDArray[np.float32], queries: NDArray[np.float32], k: int
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """The k unit vectors of `columns` (dim, N) most similar to each unit query, exactly: their positions and cosine
    similarities, (B, k) each, most similar first, and of equal similarities the earlier position first (and kept,
    where they tie for the k-th place)."""
    if len(queries) > SEARCH_CHUNK:
        parts = [nearest(columns, queries[i : i + SEARCH_CHUNK], k) for i in range(0, len(queries), SEARCH_CHUNK)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    count = columns.shape[1]
    k = min(k, count)
    scores = queries @ columns  # (B, N): one matrix product over the whole set
    top = np.argpartition(scores, count - k, axis=1)[:, -k:]  # (B, k), unordered
    kth = np.take_along_axis(scores, top, axis=1).min(axis=1, keepdims=True)  # (B, 1)
    for row in np.flatnonzero((scores >= kth).sum(axis=1) > k):  # a tie for the k-th place: the earliest win it
        above = np.flatnonzero(scores[row] > kth[row])
        top[row] = np.concatenate([above, np.flatnonzero(scores[row] == kth[row])[: k - len(above)]])
    similarities = np.take_along_axis(scores, top, axis=1)
    order = np.lexsort((top, -similarities), axis=1)
    return np.take_along_axis(top, order, axis=1).astype(np.int64), np.take_along_axis(similarities, order, axis=1)


def vote(neighbour_labels: NDArray[np.int64], num_classes: int) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """The k-NN vote over each row of neighbours' labels (nearest first): the most frequent label, a tie going to
    the tied label of the nearest neighbour; and the share of the k that voted for it."""
    rows = np.arange(len(neighbour_labels))[:, None]
    counts = np.zeros((len(neighbour_labels), num_classes), dtype=np.int64)
    np.add.at(counts, (rows, neighbour_labels), 1)
    best = counts.max(axis=1)
    tied = counts[rows, neighbour_labels] == best[:, None]  # (B, k): neighbours whose label has the most votes
    labels = neighbour_labels[rows[:, 0], tied.argmax(axis=1)]
    return labels, best / neighbour_labels.shape[1]


def vote_accuracy(
    reference: ReferenceArrays, queries: NDArray[np.float32], labels: NDArray[np.int64], ks: list[int], classes: int
) -> dict[int, float]:
    """The vote's accuracy over these unit queries for each k, in chunks so that memory stays bounded."""
    correct = dict.fromkeys(ks, 0)
    for start in range(0, len(queries), 256):
        found, _ = nearest(reference.columns, queries[start : start + 256], max(ks))
        neighbour_labels = reference.labels[found]
        for k in ks:
            correct[k] += int((vote(neighbour_labels[:, :k], classes)[0] == labels[start : start + 256]).sum())
    return {k: correct[k] / len(queries) for k in ks}


def reference_bytes(arrays: ReferenceArrays) -> bytes:
    """The reference file's bytes."""
    return save(
        {
            "columns": np.ascontiguousarray(arrays.columns, dtype=np.float32),
            "images": np.ascontiguousarray(arrays.images, dtype=np.uint8),
            "labels": np.ascontiguousarray(arrays.labels, dtype=np.int64),
            "indices": np.ascontiguousarray(arrays.indices, dtype=np.int64),
        }
    )


def write_reference(directory: Path, section: Reference, arrays: ReferenceArrays) -> Reference:
    """Write the reference file into the checkpoint's folder; the card's section for it, with its sha256."""
    path = directory / section.file
    write_whole(path, reference_bytes(arrays))
    return replace(section, sha256=sha256_file(path), size=len(arrays))


def map_reference(path: Path, dim: int, num_classes: int, sha256: str | None = None) -> ReferenceArrays:
    """The reference file's arrays, mapped read-only from disk, after checking that they are what the card says:
    the file mapped hashes to `sha256` (where given: the file checked is the file searched), and holds
    `dim`-wide finite unit vectors, 784 pixels, labels of the card's classes and ascending indices, N of each.

    The pages stay the file's: a file replaced by renaming (as sae-train writes) leaves the mapping whole, but one
    overwritten in place under a running server ends the worker that reads it (SIGBUS)."""
    try:
        with path.open("rb") as f:
            # Hashed by reading the file this descriptor holds, the one mapped: reading does not map its pages into
            # this process, which touches only those it searches (the pixels only for /reference).
            actual = hashlib.file_digest(f, "sha256").hexdigest() if sha256 is not None else ""
            file = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot be mapped: {e}") from e
    if sha256 is not None and actual != sha256:
        raise CheckpointError(
            f"{path} does not match its card: sha256 {actual[:12]}... != {sha256[:12]}...; the file was changed or "
            "truncated, retrain or restore the checkpoint"
        )
    found = _arrays(file, path)
    count = len(found["labels"])
    shapes = {"columns": (dim, count), "images": (count, 784), "labels": (count,), "indices": (count,)}
    for name, shape in shapes.items():
        if found[name].shape != shape:
            raise CheckpointError(f"{path}: '{name}' is {found[name].shape}, expected {shape}")
    arrays = ReferenceArrays(found["columns"], found["images"], found["labels"], found["indices"])
    if count == 0 or arrays.labels.min() < 0 or arrays.labels.max() >= num_classes:
        raise CheckpointError(f"{path}: the labels must be of the card's {num_classes} classes, at least one image")
    if arrays.indices.min() < 0 or (count > 1 and not (np.diff(arrays.indices) > 0).all()):
        raise CheckpointError(f"{path}: the indices must be positions in a split, ascending")
    norms = np.sqrt(np.einsum("ij,ij->j", arrays.columns, arrays.columns, dtype=np.float64))
    if not np.all(np.abs(norms - 1) < 1e-3):  # NaN fails this too
        raise CheckpointError(f"{path}: the vectors must be finite and of unit length")
    return arrays


def _arrays(file: mmap.mmap, path: Path) -> dict[str, NDArray[Any]]:
    """The safetensors file's arrays as views of the mapped file, each checked for dtype, shape, place and
    alignment, and none overlapping another."""
    try:
        (header_size,) = struct.unpack("<Q", file[:8])
        header = json.loads(file[8 : 8 + header_size]) if 8 + header_size <= len(file) else None
    except (struct.error, ValueError) as e:
        raise CheckpointError(f"{path}: not a safetensors file: {e}") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (no header)")
    start = 8 + header_size
    arrays: dict[str, NDArray[Any]] = {}
    spans: list[tuple[int, int]] = []
    for name, (tag, dtype, rank) in ARRAYS.items():
        entry = header.get(name)
        shape, offsets = (entry.get("shape"), entry.get("data_offsets")) if isinstance(entry, dict) else (None, None)
        if (
            not isinstance(entry, dict)
            or entry.get("dtype") != tag
            or not _whole_numbers(shape, rank)
            or not _whole_numbers(offsets, 2)
        ):
            raise CheckpointError(f"{path}: '{name}' must be a rank-{rank} {tag} array")
        itemsize = np.dtype(dtype).itemsize
        assert isinstance(shape, list) and isinstance(offsets, list)  # checked just above
        begin, end = offsets
        size = math.prod(shape) * itemsize
        if end - begin != size or start + end > len(file) or (start + begin) % itemsize:
            raise CheckpointError(f"{path}: '{name}' does not lie whole and aligned in the file")
        spans.append((begin, end))
        arrays[name] = np.frombuffer(file, dtype=dtype, count=size // itemsize, offset=start + begin).reshape(shape)
    spans.sort()
    if any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans)):
        raise CheckpointError(f"{path}: its arrays overlap")
    return arrays


def _whole_numbers(value: object, count: int) -> bool:
    """Whether `value` is a list of `count` whole numbers from 0 (JSON's, not booleans)."""
    return (
        isinstance(value, list)
        and len(value) == count
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value)
    )
