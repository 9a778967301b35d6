"""The out-of-distribution flag on the real trained models, through a real server, on every route and protocol:
blank, one-grey and noise images and the other data set's images are flagged, the model's own are not, and any
min_confidence abstains on what is flagged (slow; run by CI)."""

import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton

from tests.servers import require_trained_artifacts
from tests.service.grpc.calls import TIMEOUT_S, images_input
from tests.service.grpc.servers import MAX_IMAGES, Server, serve
from training.data import load_dataset

pytestmark = pytest.mark.slow
OTHER = {"mnist": "fashion-mnist", "fashion-mnist": "mnist"}


def edge_images() -> np.ndarray:
    """(8, 28, 28) uint8: blank, dark, mid and light grey, white, uniform noise, sparse noise, a white background."""
    generator = np.random.default_rng(0)
    greys = [np.full((28, 28), level, np.uint8) for level in (0, 9, 128, 200, 255)]
    noise = generator.integers(0, 256, (28, 28), dtype=np.uint8)
    sparse = ((generator.random((28, 28)) < 0.05) * 255).astype(np.uint8)
    inverted = 255 - load_dataset("mnist").test_images[0].numpy()
    return np.stack([*greys, noise, sparse, inverted])


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with serve(require_trained_artifacts()) as running:
        yield running


def post(client: httpx.Client, path: str, images: np.ndarray, accept: str = "*/*") -> httpx.Response:
    """Raw uint8 pixels to a native route."""
    headers = {"Content-Type": "application/octet-stream", "Accept": accept}
    response = client.post(path, content=images.tobytes(), headers=headers)
    assert response.status_code == 200, response.text
    return response


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_edge_images_are_flagged_on_every_route_and_protocol(server: Server, name: str) -> None:
    edges = edge_images()
    assert len(edges) <= MAX_IMAGES
    with httpx.Client(base_url=server.url, timeout=TIMEOUT_S) as client:
        classified = post(client, f"/classify?model={name}", edges).json()["predictions"]
        assert [p["in_distribution"] for p in classified] == [False] * len(edges)
        threshold = next(m for m in client.get("/models").json()["models"] if m["name"] == name)["ood"]["threshold"]
        scores = [p["ood_score"] for p in classified]
        assert all(s > threshold for s in scores[5:])  # noise and a white background score high; flat images
        assert not any(p["abstained"] for p in classified)  # abstaining is the consumer's choice
        refused = post(client, f"/classify?model={name}&min_confidence=0.01", edges).json()["predictions"]
        assert all(p["abstained"] for p in refused)

        rebuilt = post(client, f"/reconstruct?model={name}", edges, "application/json")
        assert [r["in_distribution"] for r in rebuilt.json()["reconstructions"]] == [False] * len(edges)
        png = post(client, f"/reconstruct?model={name}", edges)
        assert png.headers["x-in-distribution"] == ",".join(["false"] * len(edges))
        assert [float(s) for s in png.headers["x-ood-score"].split(",")] == pytest.approx(scores, rel=1e-4)
        for layer in (1, 2):
            embedded = post(client, f"/embed?model={name}&layer={layer}", edges).json()
            assert embedded["in_distribution"] == [False] * len(edges)
            assert embedded["ood_scores"] == pytest.approx(scores, rel=1e-4)
        npy = post(client, f"/embed?model={name}", edges, "application/x-npy")
        assert np.load(io.BytesIO(npy.content)).shape == (len(edges), 256)
        assert npy.headers["x-in-distribution"] == ",".join(["false"] * len(edges))

        tensor = {"name": "images", "shape": [len(edges), 28, 28], "datatype": "UINT8", "data": edges.ravel().tolist()}
        oip = client.post(f"/v2/models/{name}/infer", json={"inputs": [tensor]}).json()
        outputs = {o["name"]: o["data"] for o in oip["outputs"]}
        assert outputs["in_distribution"] == [False] * len(edges)
        assert outputs["ood_score"] == pytest.approx(scores, rel=1e-4)
    with triton.InferenceServerClient(server.address) as grpc_client:
        result = grpc_client.infer(
            name, [images_input(edges)], parameters={"min_confidence": 0.01}, client_timeout=TIMEOUT_S
        )
        assert result.as_numpy("in_distribution").tolist() == [False] * len(edges)  # type: ignore[union-attr]
        assert result.as_numpy("abstained").tolist() == [True] * len(edges)  # type: ignore[union-attr]
        assert result.as_numpy("ood_score").tolist() == pytest.approx(scores, rel=1e-4)  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_own_images_pass_and_the_other_data_sets_are_flagged(server: Server, name: str) -> None:
    """Within the goals the benchmark measures (at most 5% of its own, at least 95% of the other's), on the first
    400 test images of each."""
    own = load_dataset(name).test_images[:400].numpy()
    other = load_dataset(OTHER[name]).test_images[:400].numpy()
    flags = {}
    with httpx.Client(base_url=server.url, timeout=TIMEOUT_S) as client:
        for which, images in (("own", own), ("other", other)):
            inside = []
            for start in range(0, len(images), MAX_IMAGES):
                answer = post(client, f"/classify?model={name}&top_k=1", images[start : start + MAX_IMAGES])
                inside += [p["in_distribution"] for p in answer.json()["predictions"]]
            flags[which] = 1 - float(np.mean(inside))
    assert flags["own"] <= 0.05 and flags["other"] >= 0.95, flags
