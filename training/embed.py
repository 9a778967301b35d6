"""`sae-train embed`: a checkpoint's embeddings of a data set's split, written for vector databases and notebooks.

Each row: the image's index in its split, its label and class name, and its embedding as served (the card's
`embedding`: the code, unit length, compared by cosine). `reference` is the set /similar searches, read from the
checkpoint's own reference file, so a database loaded from it answers as /similar does; `train` and `test` are
computed afresh. Formats: a Parquet file (the vector a fixed-size list of float32; what LanceDB, DuckDB and pandas
read) or a folder of .npy arrays; either with the manifest (model, version, split, the embedding's description).
"""

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from models import CheckpointError, load_checkpoint, to_model_input
from models.reference import map_reference
from training.data import load_dataset
from training.reference import served_embeddings

SPLITS = ("reference", "train", "test")
FORMATS = ("parquet", "npy")


def split_embeddings(
    checkpoint_dir: Path, split: str, data_dir: Path | None, device: torch.device
) -> tuple[dict[str, Any], NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
    """(the manifest without its model name and version, indices, labels, unit vectors) of one split."""
    checkpoint = load_checkpoint(checkpoint_dir, device, exactly=True)
    card = checkpoint.card
    embedding = card.served_embedding
    if split == "reference":
        if card.reference is None:
            raise CheckpointError(f"{checkpoint_dir} has no reference set; `sae-train export` adds it")
        path = checkpoint_dir / card.reference.file
        arrays = map_reference(path, embedding.dim, len(card.class_names), card.reference.sha256)
        indices, labels, vectors = (
            np.array(arrays.indices),
            np.array(arrays.labels),
            np.ascontiguousarray(arrays.vectors),
        )
    else:
        data = load_dataset(card.dataset, data_dir)
        images, all_labels = (
            (data.train_images, data.train_labels) if split == "train" else (data.test_images, data.test_labels)
        )
        vectors = served_embeddings(checkpoint.model, to_model_input(images).to(device), embedding)
        indices, labels = np.arange(len(all_labels), dtype=np.int64), all_labels.numpy().astype(np.int64)
    manifest = {
        "dataset": card.dataset,
        "split": split,
        "count": len(indices),
        "embedding": asdict(embedding),
        "class_names": list(card.class_names),
        "weights_sha256": card.weights_sha256,
    }
    return manifest, indices, labels, vectors


def write_embeddings(
    out: Path,
    fmt: str,
    manifest: dict[str, Any],
    indices: NDArray[np.int64],
    labels: NDArray[np.int64],
    vectors: NDArray[np.float32],
) -> Path:
    """Write the rows to `out` (a .parquet file, or a folder of .npy arrays); the path written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "npy":
        out.mkdir(exist_ok=True)
        for name, array in (("indices", indices), ("labels", labels), ("vectors", vectors)):
            np.save(out / f"{name}.npy", array)
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        return out
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:
        raise SystemExit("--format parquet needs pyarrow: pip install 'sae-serve[export]' (or use --format npy)") from e
    names = manifest["class_names"]
    dim = vectors.shape[1]
    table = pa.table(
        {
            "index": pa.array(indices, pa.int64()),
            "label": pa.array(labels, pa.int64()),
            "class_name": pa.array([names[label] for label in labels.tolist()], pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim),
        }
    )
    table = table.replace_schema_metadata({"sae_serve": json.dumps(manifest)})
    pq.write_table(table, out)
    return out
