"""The model repository on a real `sae-serve` with two worker processes: a new version loaded beside the one
served, promoted, rolled back, five times over, while clients keep sending requests over REST (native and v2)
and gRPC; none fails, and every answer is the one its version computes."""

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from tests.servers import free_port, start_server
from tests.service.model_versions import DIGITS, add_version, expected_probabilities

KEY = {"Authorization": "Bearer admin"}
RAW = {"Content-Type": "application/octet-stream", **KEY}


@dataclass
class Clients:
    """Threads sending /classify (unpinned, or pinned to a version) and v2 infer until stopped; every answer
    checked against the probabilities of the version it names."""

    url: str
    expected: dict[int, np.ndarray]
    answered: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, kind: str, version: int, probabilities: np.ndarray, allowed: set[int]) -> str:
        if version not in allowed:
            return f"{kind}: version {version}, expected one of {sorted(allowed)}"
        if not np.allclose(probabilities, self.expected[version], atol=1e-5):
            return f"{kind}: the answer is not version {version}'s"
        return ""

    def run_grpc(self, address: str) -> None:
        """Unpinned ModelInfer over gRPC (tritonclient)."""
        with triton.InferenceServerClient(address) as client:
            while not self.stop.is_set():
                version = 0
                try:
                    tensor = triton.InferInput("images", list(DIGITS.shape), "UINT8")
                    tensor.set_data_from_numpy(DIGITS)
                    result = client.infer(
                        "mnist",
                        [tensor],
                        outputs=[triton.InferRequestedOutput("probabilities")],
                        headers={"authorization": "Bearer admin"},
                        client_timeout=30,
                    )
                    version = int(result.get_response().model_version)
                    problem = self.check("grpc", version, result.as_numpy("probabilities"), {2, 3})
                except InferenceServerException as e:
                    problem = f"grpc: {e!r}"
                with self.lock:
                    self.answered[f"grpc v{version}"] = self.answered.get(f"grpc v{version}", 0) + 1
                    if problem:
                        self.failures.append(problem)

    def run(self, kind: str) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop.is_set():
                try:
                    if kind == "infer v2":
                        tensor = {
                            "name": "images",
                            "shape": [4, 784],
                            "datatype": "UINT8",
                            "data": DIGITS.ravel().tolist(),
                        }
                        response = client.post(
                            "/v2/models/mnist/versions/2/infer", json={"inputs": [tensor]}, headers=KEY
                        )
                        answer = response.json()
                        output = next(o for o in answer.get("outputs", []) if o["name"] == "probabilities")
                        version, probabilities = int(answer["model_version"]), np.array(output["data"]).reshape(4, 10)
                        allowed = {2}
                    else:
                        query = "&version=2" if kind == "pinned 2" else ""
                        response = client.post(f"/classify?top_k=1{query}", content=DIGITS.tobytes(), headers=RAW)
                        answer = response.json()
                        version = answer["model_version"]
                        probabilities = np.array([list(p["probabilities"].values()) for p in answer["predictions"]])
                        allowed = {2} if kind == "pinned 2" else {2, 3}
                    problem = self.check(kind, version, probabilities, allowed)
                    if response.status_code != 200:
                        problem = f"{kind}: {response.status_code} {response.text[:200]}"
                except (httpx.HTTPError, KeyError, StopIteration, ValueError) as e:
                    problem, version = f"{kind}: {e!r}", 0
                with self.lock:
                    self.answered[f"{kind} v{version}"] = self.answered.get(f"{kind} v{version}", 0) + 1
                    if problem:
                        self.failures.append(problem)


@pytest.fixture
def server(tiny_artifacts: Path) -> Iterator[tuple[str, str]]:
    """The server's HTTP URL and gRPC address."""
    add_version(tiny_artifacts, 2, seed=2)
    port = free_port()
    process, url = start_server(tiny_artifacts, SAE_WORKERS="2", SAE_API_KEYS="admin", SAE_GRPC_PORT=str(port))
    try:
        yield url, f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(30)


def fresh_connection(url: str, path: str, **kwargs: object) -> httpx.Response:
    """A request on a connection of its own, so that successive ones reach either worker."""
    with httpx.Client(base_url=url, timeout=30, headers={"Connection": "close"}) as client:
        return client.post(path, **kwargs)  # type: ignore[arg-type]


def test_five_load_and_unload_cycles_under_load_fail_no_request(server: tuple[str, str], tiny_artifacts: Path) -> None:
    url, grpc_address = server
    version_3 = add_version(tiny_artifacts, 3, seed=3)  # trained while the service runs: not served until loaded
    expected = {v: expected_probabilities(f) for v, f in ((2, tiny_artifacts / "mnist" / "2"), (3, version_3))}
    clients = Clients(url, expected)
    kinds = ["unpinned", "unpinned", "pinned 2", "infer v2"]
    threads = [threading.Thread(target=clients.run, args=(kind,)) for kind in kinds]
    threads.append(threading.Thread(target=clients.run_grpc, args=(grpc_address,)))
    for thread in threads:
        thread.start()
    try:
        for _ in range(5):
            time.sleep(0.3)
            load = fresh_connection(
                url, "/v2/repository/models/mnist/load", json={"parameters": {"version": 3}}, headers=KEY
            )
            assert load.status_code == 200, load.text
            # Answered once every worker has it: version 3 is now what every worker serves by default.
            for _ in range(10):
                answer = fresh_connection(url, "/classify?top_k=1", content=DIGITS.tobytes(), headers=RAW).json()
                assert answer["model_version"] == 3
            time.sleep(0.3)
            unload = fresh_connection(
                url, "/v2/repository/models/mnist/unload", json={"parameters": {"version": 3}}, headers=KEY
            )
            assert unload.status_code == 200, unload.text
            for _ in range(10):
                answer = fresh_connection(url, "/classify?top_k=1", content=DIGITS.tobytes(), headers=RAW).json()
                assert answer["model_version"] == 2
                pinned = fresh_connection(url, "/classify?version=3", content=DIGITS.tobytes(), headers=RAW)
                assert pinned.status_code == 503 and "unloaded through the repository API" in pinned.json()["detail"]
    finally:
        clients.stop.set()
        for thread in threads:
            thread.join(30)
    assert clients.failures == []
    for kind in ("unpinned", "grpc"):  # both versions answered, before and after each change
        assert clients.answered.get(f"{kind} v3", 0) > 0 and clients.answered.get(f"{kind} v2", 0) > 0, clients.answered
    assert sum(clients.answered.values()) > 200, clients.answered
