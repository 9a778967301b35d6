"""The reference set's file, search and vote (models/reference.py), and its card sections."""

import hashlib
import json
import struct
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from models import CheckpointError, ModelCard
from models.card import Embedding, Reference
from models.layout import read_card, write_card
from models.reference import ReferenceArrays, map_reference, nearest, normalised, reference_bytes, vote
from tests.checkpoints import REFERENCE_IMAGES, make_card


def arrays(count: int = 64, dim: int = 8, seed: int = 0) -> ReferenceArrays:
    rng = np.random.default_rng(seed)
    return ReferenceArrays.of(
        normalised(rng.standard_normal((count, dim)).astype(np.float32)),
        rng.integers(0, 256, (count, 784), dtype=np.uint8),
        rng.integers(0, 10, count).astype(np.int64),
        np.arange(count, dtype=np.int64) * 3,
    )


def test_the_search_is_exact_ordered_and_breaks_ties_by_position() -> None:
    reference = arrays(500, 16)
    queries = normalised(np.random.default_rng(1).standard_normal((7, 16)).astype(np.float32))
    positions, similarities = nearest(reference.columns, queries, 10)
    scores = queries.astype(np.float64) @ reference.vectors.T.astype(np.float64)
    for row in range(len(queries)):
        assert positions[row].tolist() == np.argsort(-scores[row], kind="stable")[:10].tolist()
        np.testing.assert_allclose(similarities[row], scores[row][positions[row]], atol=1e-6)
    twins = np.zeros((4, 16), np.float32)
    twins[:, 0] = 1  # four equal vectors, exactly as similar to any query in any order of summation
    positions, _ = nearest(twins.T, reference.vectors[:2], 3)
    assert positions.tolist() == [[0, 1, 2], [0, 1, 2]]
    assert nearest(reference.columns[:, :5], queries, 50)[0].shape == (7, 5)  # k beyond the set: the whole set


def test_the_vote_takes_the_most_frequent_label_and_a_tie_goes_to_the_nearest() -> None:
    labels, shares = vote(np.array([[1, 2, 2, 0], [3, 4, 4, 3], [5, 6, 7, 8]]), 10)
    assert labels.tolist() == [2, 3, 5]  # a majority; a tie of 3 and 4 (3 is nearer); all tied (5 is nearest)
    np.testing.assert_allclose(shares, [0.5, 0.5, 0.25])


def test_normalised_vectors_have_unit_length_and_a_zero_vector_stays_finite() -> None:
    scaled = normalised(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32))
    np.testing.assert_allclose(scaled, [[0.6, 0.8], [0.0, 0.0]])


def test_the_file_round_trips_mapped_read_only_and_aligned(tmp_path: Path) -> None:
    written = arrays()
    path = tmp_path / "reference.safetensors"
    path.write_bytes(reference_bytes(written))
    mapped = map_reference(path, 8, 10)
    for name in ("columns", "images", "labels", "indices"):
        np.testing.assert_array_equal(getattr(mapped, name), getattr(written, name))
        assert not getattr(mapped, name).flags.writeable and getattr(mapped, name).flags.aligned
    assert mapped.position(9) == 3 and mapped.position(10) is None and mapped.position(10**6) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: replace(a, labels=a.labels + 10), "labels must be of the card's 10 classes"),
        (lambda a: replace(a, indices=a.indices[::-1].copy()), "indices must be positions in a split, ascending"),
        (lambda a: replace(a, images=a.images[:, :100].copy()), "'images' is (64, 100), expected (64, 784)"),
    ],
)
def test_a_file_that_is_not_what_the_card_says_is_refused(
    tmp_path: Path, change: Callable[[ReferenceArrays], ReferenceArrays], message: str
) -> None:
    path = tmp_path / "reference.safetensors"
    path.write_bytes(reference_bytes(change(arrays())))
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        map_reference(path, 8, 10)


def test_a_truncated_or_foreign_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "reference.safetensors"
    data = reference_bytes(arrays())
    path.write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match="does not lie whole and aligned"):
        map_reference(path, 8, 10)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        map_reference(path, 8, 10)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="cannot be mapped"):
        map_reference(path, 8, 10)
    path.write_bytes(save({"columns": np.zeros((8, 2))}))  # float64
    with pytest.raises(CheckpointError, match="'columns' must be a rank-2 F32 array"):
        map_reference(path, 8, 10)
    header = json.dumps({"columns": {"dtype": "F32", "shape": [8, 2], "data_offsets": [1, 65]}}).encode()
    header += b" " * (-len(header) % 8)  # the data start on a multiple of 8: offset 1 is off the float grid
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 80)
    with pytest.raises(CheckpointError, match="does not lie whole and aligned"):
        map_reference(path, 8, 10)


def test_the_card_keeps_its_embedding_and_reference_sections(tmp_path: Path) -> None:
    section = Reference("reference.safetensors", "ab" * 32, "train", REFERENCE_IMAGES, 3, 0.98, 0.97)
    card = replace(
        make_card("mnist", [str(d) for d in range(10)]),
        weights_sha256="cd" * 32,
        embedding=Embedding(2, 256),
        reference=section,
    )
    write_card(tmp_path, card)
    read = read_card(tmp_path)
    assert read.embedding == Embedding(2, 256, "l2", "cosine") and read.reference == section
    assert ModelCard.from_dict({**card.to_dict(), "format_version": 5}).reference is None  # a format 5 card has none
    assert read.served_embedding == Embedding(2, 256)
    older = replace(card, embedding=None)
    assert older.served_embedding == Embedding(2, 256)  # the code, unit length, cosine


@pytest.mark.parametrize(
    ("embedding", "message"),
    [
        ({"layer": 3, "dim": 256, "normalisation": "l2", "metric": "cosine"}, "not one of the model's encoder layers"),
        ({"layer": 1, "dim": 256, "normalisation": "l2", "metric": "cosine"}, "not one of the model's encoder layers"),
        ({"layer": 2, "dim": 256, "normalisation": "none", "metric": "cosine"}, "'normalisation' 'none' is not one"),
        ({"layer": 2, "dim": 256, "normalisation": "l2", "metric": "dot"}, "'metric' 'dot' is not one"),
    ],
)
def test_an_embedding_section_this_service_cannot_serve_is_refused(embedding: dict[str, object], message: str) -> None:
    raw = make_card("mnist", [str(d) for d in range(10)]).to_dict()
    with pytest.raises(CheckpointError, match=message):
        ModelCard.from_dict({**raw, "embedding": embedding})


def test_a_reference_section_naming_a_file_outside_the_folder_is_refused() -> None:
    raw = make_card("mnist", [str(d) for d in range(10)]).to_dict()
    section = {"file": "../x", "sha256": "a", "split": "train", "size": 1, "vote_k": 1}
    section |= {"vote_validation_accuracy": 0.5, "vote_test_accuracy": 0.5}
    with pytest.raises(CheckpointError, match="must be a file name in the checkpoint's folder"):
        ModelCard.from_dict({**raw, "reference": section})


def crafted(path: Path, header: dict[str, object], data: bytes) -> None:
    """A safetensors file of this header (padded to 8 bytes, as safetensors pads it) and data."""
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def valid_header(count: int = 2, dim: int = 8) -> dict[str, dict[str, object]]:
    sizes = {"indices": 8 * count, "labels": 8 * count, "columns": 4 * dim * count, "images": 784 * count}
    shapes = {"indices": [count], "labels": [count], "columns": [dim, count], "images": [count, 784]}
    tags = {"indices": "I64", "labels": "I64", "columns": "F32", "images": "U8"}
    header, offset = {}, 0
    for name, size in sizes.items():
        header[name] = {"dtype": tags[name], "shape": shapes[name], "data_offsets": [offset, offset + size]}
        offset += size
    return header


@pytest.mark.parametrize(
    ("name", "entry", "says"),
    [
        ("columns", {"shape": None}, "'columns' must be a rank-2 F32 array"),
        ("columns", {"shape": ["a", 4]}, "'columns' must be a rank-2 F32 array"),
        ("columns", {"shape": [-2, -4]}, "'columns' must be a rank-2 F32 array"),
        ("columns", {"shape": [2.7, 4]}, "'columns' must be a rank-2 F32 array"),
        ("columns", {"data_offsets": "ab"}, "'columns' must be a rank-2 F32 array"),
        ("columns", {"data_offsets": [0, 32, 64]}, "'columns' must be a rank-2 F32 array"),
        ("labels", {"data_offsets": [-16, 0]}, "'labels' must be a rank-1 I64 array"),
        ("labels", {"data_offsets": [0, 16]}, "its arrays overlap"),
        ("images", {"data_offsets": [10**12, 10**12 + 1568]}, "does not lie whole"),
    ],
)
def test_a_malformed_header_is_a_checkpoint_error_never_another_exception(
    tmp_path: Path, name: str, entry: dict[str, object], says: str
) -> None:
    header = valid_header()
    header[name] = {**header[name], **entry}
    path = tmp_path / "reference.safetensors"
    crafted(path, header, bytes(8 * 2 * 2 + 4 * 8 * 2 + 784 * 2))
    with pytest.raises(CheckpointError, match=says):
        map_reference(path, 8, 10)


@pytest.mark.parametrize("bad", [np.nan, 0.0, 1e30])
def test_vectors_that_are_not_finite_unit_vectors_are_refused(tmp_path: Path, bad: float) -> None:
    written = arrays()
    columns = written.columns.copy()
    columns[:, 5] = bad
    path = tmp_path / "reference.safetensors"
    path.write_bytes(reference_bytes(replace(written, columns=columns)))
    with pytest.raises(CheckpointError, match="finite and of unit length"):
        map_reference(path, 8, 10)


def test_the_mapped_bytes_are_the_ones_hashed(tmp_path: Path) -> None:
    path = tmp_path / "reference.safetensors"
    path.write_bytes(reference_bytes(arrays()))
    with pytest.raises(CheckpointError, match="does not match its card: sha256"):
        map_reference(path, 8, 10, "0" * 64)
    assert len(map_reference(path, 8, 10, hashlib.sha256(path.read_bytes()).hexdigest())) == 64


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"vote_k": 101}, "'vote_k' 101 is over 100"),
        ({"vote_test_accuracy": 5.0}, "accuracies must lie between 0 and 1"),
        ({"split": "../../whatever"}, "'split' '../../whatever' is not one of"),
    ],
)
def test_a_reference_section_out_of_bounds_is_refused(change: dict[str, object], says: str) -> None:
    raw = make_card("mnist", [str(d) for d in range(10)]).to_dict()
    section = {"file": "reference.safetensors", "sha256": "a", "split": "train", "size": 1, "vote_k": 3}
    section |= {"vote_validation_accuracy": 0.5, "vote_test_accuracy": 0.5, **change}
    with pytest.raises(CheckpointError, match=says):
        ModelCard.from_dict({**raw, "reference": section})


def test_a_large_batch_is_searched_in_chunks_with_the_same_answers() -> None:
    reference = arrays(2000, 16)
    queries = normalised(np.random.default_rng(2).standard_normal((100, 16)).astype(np.float32))
    together = nearest(reference.columns, queries, 5)
    for row in (0, 31, 32, 99):
        alone = nearest(reference.columns, queries[row : row + 1], 5)
        assert together[0][row].tolist() == alone[0][0].tolist()
