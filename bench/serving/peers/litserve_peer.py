"""Peer: LitServe on the same checkpoint. `python -m bench.serving.peers.litserve_peer PORT [WORKERS] [MODE]`

WORKERS inference workers (`workers_per_device`, default 1), and as many API servers (LitServe's
default); MODE batched: up to 64 requests a forward, waiting at most 5 ms (default); unbatched: one each.
"""

import sys

import litserve as ls
import numpy as np
from fastapi import Request

from bench.serving.peers.common import answer, classify, decode_png, load_model


class SAEApi(ls.LitAPI):  # type: ignore[misc]
    def setup(self, device: str) -> None:
        self.model, self.class_names = load_model()

    def decode_request(self, request: Request) -> np.ndarray:
        return decode_png(request["file"].file.read())  # type: ignore[index]

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, x: np.ndarray) -> list[list[float]]:
        return classify(self.model, x if x.ndim == 3 else x[np.newaxis])

    def unbatch(self, output: list[list[float]]) -> list[list[float]]:
        return output

    def encode_response(self, output: list[float]) -> dict[str, object]:
        probabilities = output[0] if isinstance(output[0], list) else output
        return answer(probabilities, self.class_names)


if __name__ == "__main__":
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    batched = (sys.argv[3] if len(sys.argv) > 3 else "batched") == "batched"
    api = SAEApi(max_batch_size=64 if batched else 1, batch_timeout=0.005 if batched else 0.0, api_path="/classify")
    # LitServe's health check answers 200 once every inference worker is up; bench.harness waits on this path.
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=workers, healthcheck_path="/health/ready")
    server.run(host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", generate_client_file=False)
