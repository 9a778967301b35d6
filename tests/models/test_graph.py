"""The checkpoint's ONNX graph (models/graph.py) against the torch model it was built from, in ONNX Runtime."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from models import Calibration, SAEConfig, StackedAutoencoder, load_checkpoint, save_checkpoint, to_model_input
from models.graph import IR_VERSION, OPSET, add_graph
from models.layout import GRAPH_FILE, GRAPH_INPUT, graph_outputs, read_card, write_card
from models.ood import reconstruction_errors
from tests.checkpoints import make_card
from tests.images import digit_like
from tests.servers import require_trained_artifacts
from training.data import load_dataset
from training.ood import fit_ood


def run_graph(directory: Path, pixels: np.ndarray) -> dict[str, np.ndarray]:
    card = read_card(directory)
    assert card.graph is not None
    session = ort.InferenceSession(str(directory / card.graph.file), providers=["CPUExecutionProvider"])
    names = graph_outputs(card.config.depth)
    return dict(zip(names, session.run(names, {GRAPH_INPUT: pixels.reshape(len(pixels), -1)}), strict=True))


@torch.inference_mode()
def run_torch(directory: Path, pixels: np.ndarray) -> dict[str, np.ndarray]:
    checkpoint = load_checkpoint(directory)
    x = to_model_input(torch.from_numpy(pixels))
    layers = checkpoint.model.encode_layers(x)
    rebuilt = checkpoint.model.decode(layers[-1])
    log_probabilities = checkpoint.model.classify_code(layers[-1])
    errors = reconstruction_errors(x, rebuilt)
    scores, flagged = checkpoint.judge(x, layers, errors)
    outputs = {
        "probabilities": (log_probabilities / checkpoint.card.temperature).softmax(1),
        "log_probabilities": log_probabilities,
        **{f"embedding_{k + 1}": h for k, h in enumerate(layers)},
        "reconstruction": rebuilt,
        "reconstruction_error": errors,
        "ood_score": scores,
        "in_distribution": ~flagged,
    }
    return {name: value.numpy() for name, value in outputs.items()}


# Each encoder layer is a float32 sum of up to 784 products on either side, in its own order: on Fashion-MNIST's
# test images torch's first layer lies up to 1.2e-5 from the same pass in float64, ONNX Runtime's 1.0e-5, and the two
# up to 1.4e-5 apart (measured on the trained models); everything after the layers agrees within 1e-5.
EMBEDDING_TOLERANCE = 2e-5


def assert_agree(graph: dict[str, np.ndarray], reference: dict[str, np.ndarray], score_tolerance: float) -> None:
    assert graph.keys() == reference.keys()
    assert (graph["log_probabilities"].argmax(1) == reference["log_probabilities"].argmax(1)).all()
    for name in ("probabilities", "reconstruction", "reconstruction_error"):
        np.testing.assert_allclose(graph[name], reference[name], rtol=0, atol=1e-5, err_msg=name)
    for name in ("embedding_1", "embedding_2"):
        np.testing.assert_allclose(graph[name], reference[name], rtol=0, atol=EMBEDDING_TOLERANCE, err_msg=name)
        assert np.abs(graph[name]).max() <= 1.0  # tanh's range, which ONNX Runtime's Tanh alone passes by an ulp
    assert graph["reconstruction"].min() >= 0.0 and graph["reconstruction"].max() <= 1.0
    np.testing.assert_allclose(graph["ood_score"], reference["ood_score"], rtol=0, atol=score_tolerance)
    assert (graph["in_distribution"] == reference["in_distribution"]).all()


def images(count: int) -> np.ndarray:
    """Digit-like strokes, blanks, a constant grey and noise: every path the score takes."""
    strokes = [digit_like(seed) for seed in range(count)]
    noise = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    return np.concatenate(
        [np.stack(strokes), np.zeros((2, 28, 28), np.uint8), np.full((1, 28, 28), 90, np.uint8), noise]
    )


def test_a_card_without_a_score_exports_a_graph_that_runs_as_torch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    card = save_checkpoint(StackedAutoencoder(SAEConfig()), make_card("mnist", [str(d) for d in range(10)]), tmp_path)
    assert card.graph is not None and (card.graph.opset, card.graph.ir_version) == (OPSET, IR_VERSION)
    model = onnx.load(str(tmp_path / GRAPH_FILE))
    assert model.ir_version == IR_VERSION and model.opset_import[0].version == OPSET
    pixels = images(32)
    assert_agree(run_graph(tmp_path, pixels), run_torch(tmp_path, pixels), score_tolerance=1e-6)


def test_a_fitted_score_and_a_temperature_run_in_the_graph_as_in_torch(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = StackedAutoencoder(SAEConfig()).eval()
    pixels = images(600)
    x = to_model_input(torch.from_numpy(pixels[:500]))
    labels = torch.arange(500) % 10
    detector, tensors = fit_ood(model, x[:400], labels[:400], x[400:])
    card = make_card("mnist", [str(d) for d in range(10)])
    calibration = Calibration(1.7, 100, 0.08, 0.05, 0.02, 0.4, 0.3)
    save_checkpoint(model, replace(card, ood=detector.params, calibration=calibration), tmp_path, tensors)
    graph, reference = run_graph(tmp_path, pixels), run_torch(tmp_path, pixels)
    assert_agree(graph, reference, score_tolerance=1e-3)
    assert not graph["in_distribution"][-7:-4].any()  # the blanks and the grey are flat: flagged whatever the score


def test_export_adds_the_graph_to_a_checkpoint_without_one_and_its_sha256_to_the_card(tmp_path: Path) -> None:
    torch.manual_seed(2)
    save_checkpoint(StackedAutoencoder(SAEConfig()), make_card("mnist", [str(d) for d in range(10)]), tmp_path)
    write_card(tmp_path, replace(read_card(tmp_path), graph=None))  # as written before there were graphs
    (tmp_path / GRAPH_FILE).unlink()
    card = add_graph(tmp_path)
    assert card.graph is not None and read_card(tmp_path).graph == card.graph
    pixels = images(8)
    assert_agree(run_graph(tmp_path, pixels), run_torch(tmp_path, pixels), score_tolerance=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_the_trained_models_graphs_agree_with_torch_on_every_test_image(name: str) -> None:
    directory = load_checkpoint(require_trained_artifacts() / name).path
    pixels = load_dataset(name).test_images.numpy()
    graph, reference = run_graph(directory, pixels), run_torch(directory, pixels)
    # The score sums logs of Mahalanobis distances over 784 pixels, in float32 on either side: its last digits
    # differ with the order of the sums (measured: at most 0.01 over these images; the threshold is near 3).
    agreeing = graph["in_distribution"] == reference["in_distribution"]
    near = np.abs(reference["ood_score"] - read_card(directory).ood.threshold) < 0.05  # type: ignore[union-attr]
    assert (agreeing | near).all()
    graph["in_distribution"] = reference["in_distribution"]
    assert_agree(graph, reference, score_tolerance=0.05)
    with torch.inference_mode():  # and the graph's layers are no further from the exact pass than torch's
        exact = (
            load_checkpoint(directory).model.double().encode_layers(to_model_input(torch.from_numpy(pixels)).double())
        )
    for k, layer in enumerate(exact, start=1):
        ours, torchs = (np.abs(run[f"embedding_{k}"] - layer.numpy()).max() for run in (graph, reference))
        assert ours <= max(torchs, 1e-5), (k, ours, torchs)
