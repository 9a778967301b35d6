"""A model's pass in ONNX Runtime, from the checkpoint's graph (models/graph.py): no torch."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from models.card import ModelCard
from models.errors import CheckpointError
from models.layout import GRAPH_INPUT, graph_outputs, verified
from service.core.passes import Pass


class OnnxRunner:
    runtime = "onnxruntime"
    device = "cpu"

    def __init__(self, directory: Path, card: ModelCard, threads: int) -> None:
        assert card.graph is not None  # Placement.runner checks
        # The graph holds everything the pass needs, but a checkpoint is served whole or not at all: a damaged
        # weights or score file means a damaged checkpoint, whichever runtime would run it.
        verified(directory, card.weights_file, card.weights_sha256, "weights")
        if card.ood is not None:
            verified(directory, card.ood.file, card.ood.sha256, "out-of-distribution score")
        path = verified(directory, card.graph.file, card.graph.sha256, "ONNX graph")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: ONNX Runtime's default, a thread per physical core
        options.inter_op_num_threads = 1  # one pass at a time per worker: the batcher's
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Idle pool threads would spin for a while after each pass, on cores another worker needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # ONNX Runtime raises its own Fail, InvalidGraph, ... on a file it cannot read
            raise CheckpointError(f"{path}: ONNX Runtime cannot load it: {str(e)[:300]}") from e
        inputs = [(i.name, i.type, i.shape[1:]) for i in self.session.get_inputs()]
        if inputs != [(GRAPH_INPUT, "tensor(uint8)", [card.config.input_dim])]:
            raise CheckpointError(
                f"{path}: the graph takes {str(inputs)[:200]}, not one uint8 input {GRAPH_INPUT!r} of "
                f"{card.config.input_dim} pixels; export it again"
            )
        self.outputs = graph_outputs(card.config.depth)
        missing = set(self.outputs) - {o.name for o in self.session.get_outputs()}
        if missing:
            raise CheckpointError(f"{path}: the graph lacks the outputs {sorted(missing)}; export it again")
        self.depth = card.config.depth

    def run(self, pixels: NDArray[np.uint8]) -> Pass:
        values = self.session.run(self.outputs, {GRAPH_INPUT: pixels})
        probabilities, log_probabilities, *rest = values
        layers, (reconstructions, errors, scores, inside) = rest[: self.depth], rest[self.depth :]
        return Pass(probabilities, log_probabilities, layers, reconstructions, errors, scores, inside)
