"""The min_confidence parameter over gRPC, as tritonclient sends it (a float: double_param), and as a string: it
abstains under the threshold and on images flagged out of distribution, as REST does."""

from pathlib import Path

import httpx
import numpy as np
import tritonclient.grpc as triton

from tests.service.grpc.calls import TIMEOUT_S, images_input, outputs, refusal
from tests.service.grpc.servers import serve
from tests.service.model_versions import DIGITS


def test_min_confidence_over_grpc_abstains_as_rest_does(tiny_artifacts: Path) -> None:
    with serve(tiny_artifacts) as server, triton.InferenceServerClient(server.address) as client:
        probabilities = client.infer(
            "mnist", [images_input(DIGITS)], outputs=outputs("probabilities"), client_timeout=TIMEOUT_S
        ).as_numpy("probabilities")
        tops = probabilities.max(1)
        threshold = float(np.sort(tops)[2])
        for parameter in (threshold, repr(threshold)):
            result = client.infer(
                "mnist", [images_input(DIGITS)], parameters={"min_confidence": parameter}, client_timeout=TIMEOUT_S
            )
            abstained, inside = result.as_numpy("abstained"), result.as_numpy("in_distribution")
            assert abstained is not None and abstained.dtype == np.bool_ and inside is not None
            # under the threshold, or flagged as unlike the training images (any min_confidence above 0)
            assert abstained.tolist() == [bool(top < threshold or not i) for top, i in zip(tops, inside, strict=True)]
        tensor = {"name": "images", "shape": [4, 784], "datatype": "UINT8", "data": DIGITS.ravel().tolist()}
        rest = httpx.post(
            f"{server.url}/v2/models/mnist/infer",
            json={"inputs": [tensor], "parameters": {"min_confidence": threshold}, "outputs": [{"name": "abstained"}]},
            timeout=TIMEOUT_S,
        ).json()
        assert rest["outputs"][0]["data"] == abstained.tolist()
        code, message = refusal(client.infer, "mnist", [images_input(DIGITS)], parameters={"min_confidence": 2.0})
        assert code == "INVALID_ARGUMENT" and "min_confidence must be a number from 0 to 1" in message
