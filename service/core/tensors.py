"""Open Inference Protocol (KServe v2) tensors, for REST and gRPC alike: the input checked into pixels, the outputs
selected and made. No transport here: each one's framing is its own (service/http/oip_codec.py,
service/grpc/servicer.py).

Inputs: one tensor `images`, UINT8 (0-255) or FP32 (0-1, rounded to the nearest 1/255 like the native
JSON floats), shape [N, 28, 28] or [N, 784], as JSON `data` or as binary tensor data after the JSON
header (the binary tensor data extension). Outputs, all by default or as the request's `outputs` names:
probabilities, label, embedding, reconstruction, reconstruction_error, ood_score, in_distribution, each as JSON or
binary data (`abstained` with the parameter min_confidence).

The tensor checks (image_tensor, raw_values, tensor_pixels, output_names, min_confidence) and the outputs
(output_tensors) are the same for both protocols, so that both accept and answer the same.
"""

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models import IMAGE_SIDE
from service.core.errors import UndecodableInput, quoted
from service.core.forward import AllOutputs, abstained
from service.core.pixels import Batch, Limits, PixelScale, check_count, to_pixels

INPUT_NAME = "images"
DATATYPES = {"UINT8": np.uint8, "FP32": np.float32, "INT64": np.int64, "BOOL": np.bool_}
# The request parameter under which a client abstains from doubtful answers (as /classify's min_confidence query).
MIN_CONFIDENCE = "min_confidence"
INPUT_DATATYPES = ("UINT8", "FP32")


def output_metadata(classes: int, code_dim: int) -> list[dict[str, Any]]:
    return [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]},
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "embedding", "datatype": "FP32", "shape": [-1, code_dim]},
        {"name": "reconstruction", "datatype": "FP32", "shape": [-1, IMAGE_SIDE, IMAGE_SIDE]},
        {"name": "reconstruction_error", "datatype": "FP32", "shape": [-1]},
        {"name": "ood_score", "datatype": "FP32", "shape": [-1]},
        {"name": "in_distribution", "datatype": "BOOL", "shape": [-1]},
        {"name": "abstained", "datatype": "BOOL", "shape": [-1]},
    ]


OUTPUT_NAMES = tuple(output["name"] for output in output_metadata(0, 0))
# Every output but `abstained`, which comes by default only with the parameter min_confidence.
DEFAULT_OUTPUTS = tuple(name for name in OUTPUT_NAMES if name != "abstained")
OUTPUT_DATATYPES = {output["name"]: output["datatype"] for output in output_metadata(0, 0)}
OUTPUTS_HINT = f"outputs must be named from {', '.join(OUTPUT_NAMES)}"


def model_metadata(
    name: str, versions: list[str], class_names: list[str], code_dim: int, ood: dict[str, object] | None = None
) -> dict[str, Any]:
    """`ood`: what the ood_score output means (ServedModel.ood_summary), in the parameters over REST."""
    return {
        "name": name,
        "versions": versions,
        "platform": "pytorch",
        "inputs": [{"name": INPUT_NAME, "datatype": "UINT8", "shape": [-1, IMAGE_SIDE, IMAGE_SIDE]}],
        "outputs": output_metadata(len(class_names), code_dim),
        "parameters": {
            "class_names": class_names,
            "input_datatypes": ["UINT8", "FP32"],
            **({"ood": ood} if ood is not None else {}),
        },
    }


@dataclass(frozen=True)
class ImageTensor:
    """An `images` input whose name, datatype, shape and image count have been checked."""

    datatype: str  # UINT8 or FP32
    shape: list[int]  # [N, 28, 28] or [N, 784]

    @property
    def count(self) -> int:
        return self.shape[0]

    @property
    def values(self) -> int:
        return self.count * IMAGE_SIDE * IMAGE_SIDE


def image_tensor(name: object, datatype: object, shape: object, limits: Limits) -> ImageTensor:
    """The one check of an input tensor's name, datatype, shape and image count, for REST and gRPC alike."""
    if name != INPUT_NAME:
        raise UndecodableInput(f"unknown input {quoted(name)}; the input is '{INPUT_NAME}'")
    if datatype not in INPUT_DATATYPES:
        raise UndecodableInput(f"input datatype {quoted(datatype)} is not accepted; send UINT8 (0-255) or FP32 (0-1)")
    side = IMAGE_SIDE * IMAGE_SIDE
    dims: list[int] = shape if isinstance(shape, list) else []
    valid_shape = bool(dims) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims)
    if not valid_shape or dims[1:] not in ([IMAGE_SIDE, IMAGE_SIDE], [side]) or dims[0] < 1:
        raise UndecodableInput(f"input shape {quoted(shape)} is not accepted; send [N, 28, 28] or [N, 784] with N >= 1")
    check_count(dims[0], limits)
    return ImageTensor(str(datatype), dims)


def raw_values(tensor: ImageTensor, blob: bytes, what: str) -> NDArray[Any]:
    """The tensor's values from its raw bytes (row-major, no padding), refused unless they fill its shape exactly."""
    dtype = np.dtype(DATATYPES[tensor.datatype])
    size = tensor.values * dtype.itemsize
    if len(blob) != size:
        raise UndecodableInput(f"{what} does not match the shape {tensor.shape} of {tensor.datatype} ({size} bytes)")
    return np.frombuffer(blob, dtype=dtype)


def tensor_pixels(tensor: ImageTensor, values: NDArray[Any], what: str) -> Batch:
    """The tensor's values as (N, 28, 28) pixels, through the one pixel check of the service (to_pixels)."""
    if values.size != tensor.values:
        raise UndecodableInput(f"{what} holds {values.size} values; shape {tensor.shape} needs {tensor.values}")
    scale: PixelScale = "float" if tensor.datatype == "FP32" else "uint8"
    pixels = to_pixels(values, scale, f"for datatype {tensor.datatype}", "send datatype FP32 for values in [0, 1]")
    return pixels.reshape(tensor.count, IMAGE_SIDE, IMAGE_SIDE)


def output_names(names: Sequence[object], min_confidence: float | None = None) -> tuple[str, ...]:
    """The outputs a request names, checked, in its order; when it names none, every output (`abstained` only
    with a min_confidence)."""
    if not all(name in OUTPUT_NAMES for name in names):
        raise UndecodableInput(OUTPUTS_HINT)
    return tuple(str(name) for name in names) or (DEFAULT_OUTPUTS if min_confidence is None else OUTPUT_NAMES)


def min_confidence(value: object) -> float | None:
    """The request's min_confidence parameter: a number in [0, 1], or None when absent."""
    if value is None:
        return None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise UndecodableInput(f"parameter {MIN_CONFIDENCE} must be a number from 0 to 1, found {quoted(value)}")
    return float(value)


def output_tensors(
    result: AllOutputs, names: tuple[str, ...], min_confidence: float = 0.0
) -> list[tuple[str, str, NDArray[Any]]]:
    """(name, datatype, row-major array) of each named output, in the order named: what REST and gRPC answer.
    `abstained`: the top probability is under min_confidence, or min_confidence is above 0 and the image is not in
    distribution."""
    count = len(result.probabilities)
    values: dict[str, NDArray[Any]] = {
        "probabilities": result.probabilities,
        "label": result.scores.argmax(1).astype(np.int64),
        "embedding": result.embeddings,
        "reconstruction": result.reconstructions.reshape(count, IMAGE_SIDE, IMAGE_SIDE),
        "reconstruction_error": result.reconstruction_errors,
        "ood_score": result.ood_scores,
        "in_distribution": result.in_distribution,
        "abstained": abstained(result.probabilities, min_confidence, result.in_distribution),
    }
    return [(name, OUTPUT_DATATYPES[name], np.ascontiguousarray(values[name])) for name in names]
