"""The whole pass as one ONNX graph: pixels in; probabilities, embeddings, reconstructions and the
out-of-distribution score out. A runtime without torch (ONNX Runtime) serves a checkpoint from it alone.

It is built operator by operator from the checkpoint's own files (the card, the weights, the score's tensors), not
traced from torch, so that every operation is the one torch runs in models/ and service/core/forward.py, in the
same order: the preprocessing (uint8 / 255), `StackedAutoencoder.encode_layers`, `decode` and `classify_code`,
the card's temperature, `reconstruction_errors` and `Detector` (or `ReconstructionOnly` on cards without a score).
tests/models/test_graph.py holds it to the torch model on real test images; service/core/runtime.py serves it.
Needs the `onnx` package (the `train` extra) to build; reading it needs only a runtime.
"""

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

from models.card import TINY, Graph, ModelCard
from models.layout import GRAPH_FILE, GRAPH_INPUT, read_card, sha256_file, verified, write_card, write_whole

OPSET = 17  # ReduceMean and ReduceMin still take their axes as attributes
IR_VERSION = 8  # the IR of opset 17: onnx 1.23 would write 14 by default, which ONNX Runtime 1.3x refuses

Array = NDArray[np.float32]


class _Builder:
    """Nodes and constants in the order they are added, each value named once."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.constants: list[onnx.TensorProto] = []
        self.count = 0

    def constant(self, name: str, value: NDArray[np.generic]) -> str:
        self.constants.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def scalar(self, value: float) -> str:
        self.count += 1
        return self.constant(f"scalar_{self.count}", np.array(value, dtype=np.float32))

    def op(self, kind: str, *inputs: str, output: str | None = None, **attributes: Any) -> str:
        self.count += 1
        name = output or f"{kind.lower()}_{self.count}"
        self.nodes.append(helper.make_node(kind, list(inputs), [name], name=f"n{self.count}_{kind}", **attributes))
        return name

    def bounded(self, kind: str, x: str, low: float, high: float, output: str | None = None) -> str:
        """Tanh or Sigmoid held to its range: ONNX Runtime's fast approximations can pass it by an ulp (1.0000001)."""
        return self.op("Clip", self.op(kind, x), self.scalar(low), self.scalar(high), output=output)

    def linear(self, x: str, weight: Array, bias: Array, name: str) -> str:
        """torch's Linear: x W' + b."""
        w, b = self.constant(f"{name}.weight", weight), self.constant(f"{name}.bias", bias)
        return self.op("Gemm", x, w, b, transB=1)

    def mahalanobis(self, features: str, means: Array, precision: Array, k: int) -> str:
        """models.ood.Gaussians: the squared distance to the nearest class mean, floored at TINY."""
        precision, means = precision.astype(np.float32), means.astype(np.float32)
        p = self.constant(f"precision.{k}", precision)
        projected = self.constant(f"projected.{k}", np.ascontiguousarray(precision @ means.T))  # (D, C)
        offsets = self.constant(f"offsets.{k}", (means @ precision * means).sum(1))  # (C,)
        one = self.constant(f"axis1.{k}", np.array([1], dtype=np.int64))
        quadratic = self.op("ReduceSum", self.op("Mul", self.op("MatMul", features, p), features), one, keepdims=1)
        cross = self.op("Mul", self.op("MatMul", features, projected), self.scalar(2.0))
        nearest = self.op("ReduceMin", self.op("Add", self.op("Sub", quadratic, cross), offsets), axes=[1], keepdims=0)
        return self.op("Max", nearest, self.scalar(TINY))

    def standardised_log(self, value: str, mean: float, std: float) -> str:
        return self.op("Div", self.op("Sub", self.op("Log", value), self.scalar(mean)), self.scalar(std))


def build(card: ModelCard, weights: dict[str, Array], ood_tensors: dict[str, Array] | None) -> onnx.ModelProto:
    """The card's model as an ONNX graph; `ood_tensors` (models/ood.py's means and precisions) where it has a score."""
    config, g = card.config, _Builder()
    side = config.input_dim
    x = g.op("Div", g.op("Cast", GRAPH_INPUT, to=TensorProto.FLOAT), g.scalar(255.0), output="x")  # (N, 784)
    layers, h = [], x
    for k in range(config.depth):
        h = g.bounded(
            "Tanh", g.linear(h, weights[f"encoders.{k}.weight"], weights[f"encoders.{k}.bias"], f"encoders.{k}"), -1, 1
        )
        layers.append(g.op("Identity", h, output=f"embedding_{k + 1}"))  # (N, 400), then (N, 256)
    rebuilt = layers[-1]
    for k in reversed(range(config.depth)):
        rebuilt = g.linear(rebuilt, weights[f"decoders.{k}.weight"], weights[f"decoders.{k}.bias"], f"decoders.{k}")
        if k == 0:
            rebuilt = g.bounded("Sigmoid", rebuilt, 0, 1, output="reconstruction")
        else:
            rebuilt = g.bounded("Tanh", rebuilt, -1, 1)
    logits = g.linear(layers[-1], weights["head.weight"], weights["head.bias"], "head")
    log_probabilities = g.op("LogSoftmax", logits, axis=1, output="log_probabilities")
    if card.temperature == 1.0:
        g.op("Exp", log_probabilities, output="probabilities")
    else:
        scaled = g.op("Div", log_probabilities, g.scalar(card.temperature))
        g.op("Softmax", scaled, axis=1, output="probabilities")
    difference = g.op("Sub", rebuilt, x)
    errors = g.op("ReduceMean", g.op("Mul", difference, difference), axes=[1], keepdims=0)
    errors = g.op("Identity", errors, output="reconstruction_error")  # (N,)
    ood = card.ood
    if ood is None:  # models.ood.ReconstructionOnly
        score = g.op("Identity", errors, output="ood_score")
        flagged = g.op("Greater", score, g.scalar(card.error_threshold))
    else:  # models.ood.Detector
        if ood_tensors is None:
            raise ValueError("a card with an out-of-distribution score needs its tensors to build its graph")
        floored = g.op("Max", errors, g.scalar(TINY))
        total = g.standardised_log(floored, ood.reconstruction_log_mean, ood.reconstruction_log_std)
        for k, features in enumerate([x, *layers]):
            distance = g.mahalanobis(features, ood_tensors[f"means.{k}"], ood_tensors[f"precision.{k}"], k)
            total = g.op("Add", total, g.standardised_log(distance, ood.layer_log_means[k], ood.layer_log_stds[k]))
        score = g.op("Identity", total, output="ood_score")
        # torch's std: the unbiased one, over the 784 pixels
        centred = g.op("Sub", x, g.op("ReduceMean", x, axes=[1], keepdims=1))
        axis = g.constant("axis1.std", np.array([1], dtype=np.int64))
        variance = g.op("Div", g.op("ReduceSum", g.op("Mul", centred, centred), axis, keepdims=0), g.scalar(side - 1))
        flat = g.op("Less", g.op("Sqrt", variance), g.scalar(ood.flat_std))
        unfinite = g.op("Or", g.op("IsNaN", score), g.op("IsInf", score))
        flagged = g.op("Or", g.op("Or", g.op("Greater", score, g.scalar(ood.threshold)), flat), unfinite)
    g.op("Not", flagged, output="in_distribution")

    def output(name: str, element: int, *dims: int) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, element, ["N", *dims])

    outputs = [
        output("probabilities", TensorProto.FLOAT, config.num_classes),
        output("log_probabilities", TensorProto.FLOAT, config.num_classes),
        *(output(f"embedding_{k + 1}", TensorProto.FLOAT, w) for k, w in enumerate(config.hidden_dims)),
        output("reconstruction", TensorProto.FLOAT, side),
        output("reconstruction_error", TensorProto.FLOAT),
        output("ood_score", TensorProto.FLOAT),
        output("in_distribution", TensorProto.BOOL),
    ]
    graph = helper.make_graph(
        g.nodes,
        f"sae_{card.dataset}",
        [helper.make_tensor_value_info(GRAPH_INPUT, TensorProto.UINT8, ["N", side])],
        outputs,
        initializer=g.constants,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="sae-serve", ir_version=IR_VERSION
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def export(directory: Path, card: ModelCard) -> Graph:
    """Build the graph of the checkpoint in `directory` from its verified files and write it beside them as
    model.onnx; return the card's `graph` section for it (the caller writes the card: `add_graph` does both)."""
    weights = load_file(str(verified(directory, card.weights_file, card.weights_sha256, "weights")))
    ood_tensors = None
    if card.ood is not None:
        ood_tensors = load_file(str(verified(directory, card.ood.file, card.ood.sha256, "out-of-distribution score")))
    model = build(card, weights, ood_tensors)
    write_whole(directory / GRAPH_FILE, model.SerializeToString())
    return Graph(file=GRAPH_FILE, sha256=sha256_file(directory / GRAPH_FILE), opset=OPSET, ir_version=IR_VERSION)


def add_graph(directory: Path) -> ModelCard:
    """Export the checkpoint's graph and name it in its card (format 5 from then on); return the new card."""
    card = read_card(directory)
    written = replace(card, graph=export(directory, card))
    write_card(directory, written)
    return written
