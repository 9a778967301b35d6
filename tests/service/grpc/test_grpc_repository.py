"""Model versions and the model repository over gRPC, with the real tritonclient.grpc against a real `sae-serve`
with two workers: the index, loading and unloading (the whole model as Triton does, one version with the
`version` parameter), pinned versions in ModelInfer, ModelMetadata and ModelReady, and the admin rules."""

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.service.grpc.calls import TIMEOUT_S, images_input, outputs, refusal
from tests.service.grpc.servers import Server, serve
from tests.service.model_versions import DIGITS, add_version, expected_probabilities

KEY = {"authorization": "Bearer admin"}


@pytest.fixture
def versioned_server(tiny_artifacts: Path) -> Iterator[Server]:
    add_version(tiny_artifacts, 2, seed=2)
    with serve(tiny_artifacts, SAE_WORKERS="2", SAE_API_KEYS="admin") as running:
        yield running


def infer(client: triton.InferenceServerClient, version: str = "") -> tuple[str, np.ndarray]:
    result = client.infer(
        "mnist",
        [images_input(DIGITS)],
        model_version=version,
        outputs=outputs("probabilities"),
        headers=KEY,
        client_timeout=TIMEOUT_S,
    )
    return result.get_response().model_version, result.as_numpy("probabilities")


def version_call(server: Server, method: str, version: object) -> None:
    """Load or unload one version: tritonclient has no argument for it, so the request is made here."""
    parameter = (
        service_pb2.ModelRepositoryParameter(int64_param=version)
        if isinstance(version, int)
        else service_pb2.ModelRepositoryParameter(string_param=str(version))
    )
    request_type = getattr(service_pb2, f"{method}Request")
    request = request_type(model_name="mnist", parameters={"version": parameter})
    with grpc.insecure_channel(server.address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        getattr(stub, method)(request, metadata=tuple(KEY.items()), timeout=TIMEOUT_S)


def index(client: triton.InferenceServerClient, ready: bool = False) -> set[tuple[str, str, str]]:
    answer = client.get_model_repository_index(headers=KEY, as_json=True, client_timeout=TIMEOUT_S)
    models = answer.get("models", [])
    return {(m["name"], m.get("version", ""), m.get("state", "")) for m in models if not ready or m["state"] == "READY"}


def test_versions_over_grpc_load_promote_roll_back_and_reload(versioned_server: Server, tiny_artifacts: Path) -> None:
    first, second = (
        expected_probabilities(tiny_artifacts / "mnist"),
        expected_probabilities(tiny_artifacts / "mnist" / "2"),
    )
    with triton.InferenceServerClient(versioned_server.address) as client:
        assert index(client) == {
            ("fashion-mnist", "1", "READY"),
            ("mnist", "1", "UNAVAILABLE"),
            ("mnist", "2", "READY"),
        }
        version, probabilities = infer(client)
        assert version == "2"
        np.testing.assert_allclose(probabilities, second, atol=1e-5)
        assert (
            refusal(client.infer, "mnist", [images_input(DIGITS)], model_version="1", headers=KEY)[0] == "UNAVAILABLE"
        )

        version_call(versioned_server, "RepositoryModelLoad", 1)  # beside version 2
        assert client.get_model_metadata("mnist", headers=KEY, as_json=True)["versions"] == ["1", "2"]
        assert client.is_model_ready("mnist", "1", headers=KEY) and client.is_model_ready("mnist", "2", headers=KEY)
        for _ in range(6):  # connections of their own would be spread over both workers: every one has it
            with triton.InferenceServerClient(versioned_server.address) as fresh:
                version, probabilities = infer(fresh, "1")
                assert version == "1"
                np.testing.assert_allclose(probabilities, first, atol=1e-5)

        version_call(versioned_server, "RepositoryModelUnload", "2")  # the newest goes: back to version 1
        version, probabilities = infer(client)
        assert version == "1"
        np.testing.assert_allclose(probabilities, first, atol=1e-5)
        code, message = refusal(client.infer, "mnist", [images_input(DIGITS)], model_version="2", headers=KEY)
        assert code == "UNAVAILABLE" and "unloaded through the repository API" in message

        client.unload_model("mnist", headers=KEY, client_timeout=TIMEOUT_S)  # Triton's own call: every version
        code, message = refusal(client.infer, "mnist", [images_input(DIGITS)], headers=KEY)
        assert code == "UNAVAILABLE" and "unloaded through the repository API" in message
        assert ("mnist", "1", "READY") not in index(client) and ("mnist", "2", "READY") not in index(client)
        client.load_model("mnist", headers=KEY, client_timeout=TIMEOUT_S)  # the policy afresh: latest:1
        assert infer(client)[0] == "2" and index(client, ready=True) == {
            ("fashion-mnist", "1", "READY"),
            ("mnist", "2", "READY"),
        }


def test_the_repository_rpcs_refuse_what_they_must(versioned_server: Server, tiny_artifacts: Path) -> None:
    with triton.InferenceServerClient(versioned_server.address) as client:
        assert refusal(client.get_model_repository_index)[0] == "UNAUTHENTICATED"
        assert refusal(client.load_model, "mnist", headers={"authorization": "Bearer nope"})[0] == "UNAUTHENTICATED"
        code, message = refusal(client.load_model, "nope", headers=KEY)
        assert code == "NOT_FOUND" and "unknown model 'nope' in the repository" in message
        code, message = refusal(client.load_model, "mnist", headers=KEY, config='{"backend": "onnx"}')
        assert code == "INVALID_ARGUMENT" and "unknown parameters ['config']" in message
        with pytest.raises(grpc.RpcError) as caught:
            version_call(versioned_server, "RepositoryModelLoad", 9)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "has no version 9 in the repository" in str(caught.value.details())
        broken = add_version(tiny_artifacts, 3, seed=3)
        (broken / "model.safetensors").write_bytes(b"not weights")
        with pytest.raises(grpc.RpcError) as caught:
            version_call(versioned_server, "RepositoryModelLoad", 3)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "does not match its card" in str(caught.value.details()) and "still serves versions [2]" in str(
            caught.value.details()
        )
        assert infer(client)[0] == "2"


def test_without_keys_the_repository_rpcs_are_off(tiny_artifacts: Path) -> None:
    with serve(tiny_artifacts) as server, triton.InferenceServerClient(server.address) as client:
        code, message = refusal(client.get_model_repository_index)
        assert code == "PERMISSION_DENIED" and "set SAE_API_KEYS" in message
