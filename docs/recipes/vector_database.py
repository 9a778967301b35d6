"""Load sae-serve's exported embeddings into LanceDB, an embedded vector database, and ask it for the images most
like one, with the query's embedding from the service's OpenAI embeddings API (docs/embeddings.md).

    sae-train embed --dataset mnist --split reference --format parquet   # -> embeddings/mnist-1-reference.parquet
    python docs/recipes/vector_database.py embeddings/mnist-1-reference.parquet docs/samples/digit-7.png

Needs `pip install lancedb openai` (the dev extra has both) and a running sae-serve.
"""

import argparse
import base64
import json
from pathlib import Path
from typing import Any

import lancedb
import openai
import pyarrow.parquet as pq


def load(parquet: Path, database: Path) -> tuple[Any, str]:
    """The export as a LanceDB table in the database folder, and the model version that wrote it (`name:version`,
    the only one whose embeddings it may be queried with)."""
    rows = pq.read_table(parquet)
    manifest = json.loads(rows.schema.metadata[b"sae_serve"])
    name = f"{manifest['model']}-{manifest['version']}-{manifest['split']}"
    table = lancedb.connect(database).create_table(name, rows, mode="overwrite")
    return table, f"{manifest['model']}:{manifest['version']}"


def embedding(client: openai.OpenAI, model: str, png: bytes) -> list[float]:
    """The service's embedding of one image file by `model` (name:version): the same vector the export holds for
    its own images."""
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    return client.embeddings.create(model=model, input=url).data[0].embedding


def nearest(table: Any, vector: list[float], k: int) -> list[dict[str, Any]]:
    """The k rows most like `vector` by cosine distance (1 - cosine similarity), nearest first; no index is built,
    so LanceDB searches them all, exactly, as /similar does."""
    found = table.search(vector).distance_type("cosine").limit(k).to_list()
    return [{"index": r["index"], "class_name": r["class_name"], "distance": r["_distance"]} for r in found]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parquet", type=Path, help="a file `sae-train embed --format parquet` wrote")
    parser.add_argument("image", type=Path, help="a PNG to find the like of")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the service (default: %(default)s)")
    parser.add_argument("--database", type=Path, default=Path("vectors.lancedb"), help="LanceDB's folder")
    parser.add_argument("-k", type=int, default=5, help="how many neighbours (default: 5)")
    args = parser.parse_args()
    table, model = load(args.parquet, args.database)
    client = openai.OpenAI(base_url=f"{args.url}/v1", api_key="unused unless the service sets SAE_API_KEYS")
    for row in nearest(table, embedding(client, model, args.image.read_bytes()), args.k):
        print(f"index {row['index']:>6}  {row['class_name']:<12} distance {row['distance']:.4f}")


if __name__ == "__main__":
    main()
