"""Open Inference Protocol v2 through the real `tritonclient[http]` against a real server (slow)."""

from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.images import digit_like
from tests.servers import start_server
from tests.service.native_answers import native

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tiny_artifacts: Path):  # type: ignore[no-untyped-def]
    process, url = start_server(tiny_artifacts)
    yield url
    process.terminate()
    process.wait(timeout=20)


@pytest.mark.parametrize("binary", [True, False], ids=["binary tensors", "JSON tensors"])
def test_tritonclient_answers_equal_the_native_routes(server: str, binary: bool) -> None:
    client = triton.InferenceServerClient(url=server.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("fashion-mnist")
    metadata = client.get_model_metadata("fashion-mnist")
    assert metadata["inputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, 28, 28]}]
    assert {o["name"] for o in metadata["outputs"]} == {
        "probabilities",
        "label",
        "embedding",
        "reconstruction",
        "reconstruction_error",
        "ood_score",
        "in_distribution",
        "abstained",
    }
    images = np.stack([digit_like(i) for i in range(5)])
    tensor = triton.InferInput("images", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images, binary_data=binary)
    wanted = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("probabilities", "label", "embedding")]
    result = client.infer("fashion-mnist", [tensor], outputs=wanted)
    probabilities, labels, embeddings = native(server, images, "fashion-mnist")
    assert np.allclose(result.as_numpy("probabilities"), probabilities, atol=1e-6)
    assert result.as_numpy("label").tolist() == labels
    assert np.allclose(result.as_numpy("embedding"), embeddings, atol=1e-6)


def test_fp32_inputs_and_flat_shapes(server: str) -> None:
    client = triton.InferenceServerClient(url=server.removeprefix("http://"))
    images = np.stack([digit_like(i) for i in range(3)])
    tensor = triton.InferInput("images", [3, 784], "FP32")
    tensor.set_data_from_numpy((images.reshape(3, 784) / 255).astype(np.float32))
    result = client.infer("mnist", [tensor])
    assert result.as_numpy("reconstruction").shape == (3, 28, 28)
    assert np.allclose(result.as_numpy("probabilities"), native(server, images, "mnist")[0], atol=1e-6)


def test_protocol_errors(server: str) -> None:
    client = triton.InferenceServerClient(url=server.removeprefix("http://"))
    with pytest.raises(InferenceServerException, match="unknown model 'cifar'"):
        client.get_model_metadata("cifar")
    tensor = triton.InferInput("images", [1, 27, 28], "UINT8")
    tensor.set_data_from_numpy(np.zeros((1, 27, 28), np.uint8))
    with pytest.raises(InferenceServerException, match=r"input shape \[1, 27, 28\] is not accepted"):
        client.infer("mnist", [tensor])
    response = httpx.post(f"{server}/v2/models/mnist/infer", json={"inputs": []})
    assert response.status_code == 400 and "exactly one input tensor" in response.json()["error"]
