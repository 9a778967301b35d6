"""encode: numpy results -> response bodies (JSON, PNG, .npy) and content negotiation."""

import io
from typing import Any
from urllib.parse import quote

import numpy as np
import orjson
from numpy.typing import NDArray
from PIL import Image
from starlette.responses import Response

from service.core.errors import NotAcceptable, quoted
from service.core.forward import Classification, Embeddings, Reconstructions, Similar, abstained
from service.core.passes import Flags, Floats
from service.core.repository import ServedModel


class FastJSONResponse(Response):
    """JSON through orjson, which also writes numpy arrays and scalars directly."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def negotiate(accept: str | None, offered: list[str]) -> str:
    """The offered media type the Accept header prefers (the first offered on a tie or no header)."""
    if not accept:
        return offered[0]
    best, best_q = None, 0.0
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        for candidate in offered:
            matches = media in (candidate, "*/*") or (media.endswith("/*") and candidate.startswith(media[:-1]))
            rank = q + (0.001 if media == candidate else 0.0)  # an exact match beats a wildcard of equal q
            if matches and q > 0 and rank > best_q:
                best, best_q = candidate, rank
    if best is None:
        raise NotAcceptable(f"cannot answer with {quoted(accept)}; this endpoint offers {', '.join(offered)}")
    return best


def classification_json(
    model: str,
    version: int,
    result: Classification,
    class_names: list[str],
    top_k: int,
    min_confidence: float = 0.0,
) -> dict[str, object]:
    """`abstained`: the top probability is under `min_confidence`, or the image is flagged as unlike the training
    images and min_confidence is above 0 (the label is given all the same)."""
    probabilities = result.probabilities
    top = np.argsort(-result.scores, axis=1, kind="stable")[:, :top_k].tolist()  # (N, k), one sort for the batch
    rows = probabilities.tolist()
    errors = result.reconstruction_errors.tolist()
    refused = abstained(probabilities, min_confidence, result.in_distribution).tolist()
    judged = zip(result.ood_scores.tolist(), result.in_distribution.tolist(), strict=True)
    predictions = []
    for probs, order, error, abstain, (ood, inside) in zip(rows, top, errors, refused, judged, strict=True):
        label = order[0]
        predictions.append(
            {
                "label": label,
                "class_name": class_names[label],
                "probabilities": dict(zip(class_names, probs, strict=True)),
                "top_k": [{"label": i, "class_name": class_names[i], "probability": probs[i]} for i in order],
                "reconstruction_error": error,
                "ood_score": ood,
                "in_distribution": inside,
                "abstained": abstain,
            }
        )
    return {"model": model, "model_version": version, "predictions": predictions}


def png_strip(pixels: NDArray[np.uint8]) -> bytes:
    """N images of 28x28 side by side in one grayscale PNG of 28 x 28N."""
    strip = np.concatenate(list(pixels), axis=1)  # (28, 28 * N)
    buffer = io.BytesIO()
    Image.fromarray(strip).save(buffer, format="PNG")
    return buffer.getvalue()


def reconstruction_json(model: str, version: int, result: Reconstructions) -> dict[str, object]:
    return {
        "model": model,
        "model_version": version,
        "reconstructions": [
            {"pixels": pixels, "reconstruction_error": error, "ood_score": ood, "in_distribution": inside}
            for pixels, error, ood, inside in zip(
                result.pixels.tolist(),
                result.reconstruction_errors.tolist(),
                result.ood_scores.tolist(),
                result.in_distribution.tolist(),
                strict=True,
            )
        ],
    }


def judged_headers(ood_scores: Floats, in_distribution: Flags) -> dict[str, str]:
    """Each image's out-of-distribution score and flag, for answers whose body is an image or an array."""
    return {
        "X-OOD-Score": ",".join(f"{s:.6g}" for s in ood_scores.tolist()),
        "X-In-Distribution": ",".join("true" if inside else "false" for inside in in_distribution.tolist()),
    }


def npy_bytes(array: Floats) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def embedding_json(model: str, version: int, layer: int, embeddings: Embeddings) -> dict[str, object]:
    return {
        "model": model,
        "model_version": version,
        "layer": layer,
        "dimension": int(embeddings.vectors.shape[1]),
        "embeddings": embeddings.vectors.tolist(),
        "ood_scores": embeddings.ood_scores.tolist(),
        "in_distribution": embeddings.in_distribution.tolist(),
    }


def reference_url(served: ServedModel, index: int) -> str:
    """Where a reference image is shown: the version is in the URL, so what it shows never changes."""
    return f"/reference/{quote(served.name, safe='')}/{index}.png?version={served.version}"


def similar_json(served: ServedModel, result: Similar, k: int) -> dict[str, object]:
    """Each image's label and the nearest k reference images, with their vote as a second opinion; labels as
    /classify gives them, a class's index and its `class_name`."""
    (reference, section), names = served.searched(), served.class_names
    top = result.scores.argmax(axis=1).tolist()
    results = []
    for i, label in enumerate(top):
        positions = result.positions[i, :k]
        similarities = np.clip(result.similarities[i, :k], -1.0, 1.0).tolist()
        neighbours = [
            {
                "index": index,
                "label": neighbour_label,
                "class_name": names[neighbour_label],
                "similarity": similarity,
                "distance": 1.0 - similarity,
                "image": reference_url(served, index),
            }
            for index, neighbour_label, similarity in zip(
                reference.indices[positions].tolist(), reference.labels[positions].tolist(), similarities, strict=True
            )
        ]
        voted = int(result.votes[i])
        results.append(
            {
                "label": label,
                "class_name": names[label],
                "probability": float(result.probabilities[i, label]),
                "ood_score": float(result.ood_scores[i]),
                "in_distribution": bool(result.in_distribution[i]),
                "vote": {
                    "label": voted,
                    "class_name": names[voted],
                    "share": float(result.vote_shares[i]),
                    "k": section.vote_k,
                    "agrees": voted == label,
                },
                "neighbours": neighbours,
            }
        )
    return {
        "model": served.name,
        "model_version": served.version,
        "metric": served.card.served_embedding.metric,
        "reference": {"split": section.split, "size": len(reference)},
        "results": results,
    }
