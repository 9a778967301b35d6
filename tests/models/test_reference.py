"""The reference set's file, search and vote (models/reference.py), and its card sections."""

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
    return ReferenceArrays(
        normalised(rng.standard_normal((count, dim)).astype(np.float32)),
        rng.integers(0, 256, (count, 784), dtype=np.uint8),
        rng.integers(0, 10, count).astype(np.int64),
        np.arange(count, dtype=np.int64) * 3,
    )


def test_the_search_is_exact_ordered_and_breaks_ties_by_position() -> None:
    reference = arrays(500, 16)
    queries = normalised(np.random.default_rng(1).standard_normal((7, 16)).astype(np.float32))
    positions, similarities = nearest(reference.vectors, queries, 10)
    scores = queries.astype(np.float64) @ reference.vectors.T.astype(np.float64)
    for row in range(len(queries)):
        assert positions[row].tolist() == np.argsort(-scores[row], kind="stable")[:10].tolist()
        np.testing.assert_allclose(similarities[row], scores[row][positions[row]], atol=1e-6)
    twins = np.zeros((4, 16), np.float32)
    twins[:, 0] = 1  # four equal vectors, exactly as similar to any query in any order of summation
    positions, _ = nearest(twins, reference.vectors[:2], 3)
    assert positions.tolist() == [[0, 1, 2], [0, 1, 2]]
    assert nearest(reference.vectors[:5], queries, 50)[0].shape == (7, 5)  # k beyond the set: the whole set


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
    for name in ("vectors", "images", "labels", "indices"):
        np.testing.assert_array_equal(getattr(mapped, name), getattr(written, name))
        assert not getattr(mapped, name).flags.writeable and getattr(mapped, name).flags.aligned
    assert mapped.position(9) == 3 and mapped.position(10) is None and mapped.position(10**6) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: replace(a, labels=a.labels + 10), "labels must be of the card's 10 classes"),
        (lambda a: replace(a, indices=a.indices[::-1].copy()), "indices must ascend"),
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
    path.write_bytes(save({"vectors": np.zeros((2, 8))}))  # float64
    with pytest.raises(CheckpointError, match="'vectors' must be a rank-2 F32 array"):
        map_reference(path, 8, 10)
    header = json.dumps({"vectors": {"dtype": "F32", "shape": [2, 8], "data_offsets": [1, 65]}}).encode()
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
