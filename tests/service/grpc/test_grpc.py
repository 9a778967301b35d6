"""The Open Inference Protocol over gRPC: the real `tritonclient.grpc` against a real `sae-serve` (slow), and a
supervisor that must not load grpc before it forks (fast).

Nothing here imports service.grpc.stubs: its messages and tritonclient's have the same protobuf names, which one
process cannot hold twice. tritonclient's messages are the same on the wire, so they build the hand-made requests.
"""

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import torch
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from tritonclient.grpc import service_pb2, service_pb2_grpc

from models import load_checkpoint
from service.core import forward
from service.core.repository import ServedModel
from service.core.run_torch import TorchRunner
from tests.checkpoints import write_tiny_artifacts
from tests.images import digit_like
from tests.servers import require_trained_artifacts
from tests.service.grpc.calls import TIMEOUT_S, images_input, outputs, refusal
from tests.service.grpc.servers import MAX_IMAGES, Server, serve
from tests.service.native_answers import native
from tests.service.workers.processes import workers_of
from training.data import load_dataset

INFERENCE = "inference.GRPCInferenceService"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_artifacts(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="module")
def server(artifacts: Path) -> Iterator[Server]:
    with serve(artifacts) as running:
        yield running


@pytest.fixture
def client(server: Server) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(server.address) as grpc_client:
        yield grpc_client


def rest_error(url: str, model: str, images: np.ndarray, datatype: str = "UINT8") -> str:
    tensor = {"name": "images", "shape": list(images.shape), "datatype": datatype, "data": images.ravel().tolist()}
    response = httpx.post(f"{url}/v2/models/{model}/infer", json={"inputs": [tensor]}, timeout=TIMEOUT_S)
    assert response.status_code >= 400
    return str(response.json()["error"])


def test_the_supervisor_does_not_load_grpc_before_it_forks() -> None:
    preload = "from service.workers.main import get_settings, preload; preload(get_settings())"
    probe = f"import sys; {preload}; print(sorted(m for m in sys.modules if 'grpc' in m))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
def test_liveness_readiness_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live(client_timeout=TIMEOUT_S) and client.is_server_ready(client_timeout=TIMEOUT_S)
    assert client.is_model_ready("mnist", client_timeout=TIMEOUT_S)
    assert client.is_model_ready("fashion-mnist", "1", client_timeout=TIMEOUT_S)
    server = client.get_server_metadata(as_json=True, client_timeout=TIMEOUT_S)
    assert server == {"name": "sae-serve", "version": "0.1.0", "extensions": ["binary_tensor_data"]}
    metadata = client.get_model_metadata("fashion-mnist", as_json=True, client_timeout=TIMEOUT_S)
    assert metadata["versions"] == ["1"] and metadata["platform"] == "pytorch"
    assert metadata["inputs"] == [{"name": "images", "datatype": "UINT8", "shape": ["-1", "28", "28"]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in metadata["outputs"]] == [
        ("probabilities", "FP32", ["-1", "10"]),
        ("label", "INT64", ["-1"]),
        ("embedding", "FP32", ["-1", "256"]),
        ("reconstruction", "FP32", ["-1", "28", "28"]),
        ("reconstruction_error", "FP32", ["-1"]),
        ("ood_score", "FP32", ["-1"]),
        ("in_distribution", "BOOL", ["-1"]),
        ("abstained", "BOOL", ["-1"]),
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("datatype", "shape"), [("UINT8", (5, 28, 28)), ("FP32", (5, 784))], ids=["UINT8 [N,28,28]", "FP32 [N,784]"]
)
def test_raw_tensors_answer_as_classify_and_embed_do(
    client: triton.InferenceServerClient, server: Server, datatype: str, shape: tuple[int, ...]
) -> None:
    images = np.stack([digit_like(i) for i in range(5)])
    sent = images.reshape(shape) if datatype == "UINT8" else (images.reshape(shape) / 255).astype(np.float32)
    result = client.infer(
        "mnist", [images_input(sent, datatype)], request_id="r-1", client_timeout=TIMEOUT_S
    )  # every output
    probabilities, labels, embeddings = native(server.url, images, "mnist")
    answer = result.get_response()
    assert (answer.model_name, answer.model_version, answer.id) == ("mnist", "1", "r-1")
    assert [o.name for o in answer.outputs] == [
        "probabilities",
        "label",
        "embedding",
        "reconstruction",
        "reconstruction_error",
        "ood_score",
        "in_distribution",
    ]
    assert len(answer.raw_output_contents) == 7  # raw outputs, as Triton answers
    assert np.allclose(result.as_numpy("probabilities"), probabilities, atol=1e-6)
    assert result.as_numpy("label").tolist() == labels
    assert np.allclose(result.as_numpy("embedding"), embeddings, atol=1e-6)
    assert result.as_numpy("reconstruction").shape == (5, 28, 28)
    assert result.as_numpy("reconstruction_error").shape == (5,)
    assert result.as_numpy("ood_score").shape == (5,) and result.as_numpy("in_distribution").dtype == np.bool_


@pytest.mark.slow
def test_typed_contents_and_chosen_outputs(server: Server) -> None:
    images = np.stack([digit_like(10 + i) for i in range(3)])
    with grpc.insecure_channel(server.address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        answers = []
        for datatype, field, values in (
            ("UINT8", "uint_contents", images.ravel().tolist()),
            ("FP32", "fp32_contents", (images.ravel() / 255).tolist()),
        ):
            request = service_pb2.ModelInferRequest(model_name="fashion-mnist")
            tensor = request.inputs.add(name="images", datatype=datatype, shape=[3, 28, 28])
            getattr(tensor.contents, field).extend(values)
            request.outputs.add(name="reconstruction_error")
            request.outputs.add(name="label")
            answers.append(stub.ModelInfer(request, timeout=TIMEOUT_S))
    for answer in answers:
        assert [(o.name, o.datatype, list(o.shape)) for o in answer.outputs] == [
            ("reconstruction_error", "FP32", [3]),
            ("label", "INT64", [3]),
        ]
        result = triton.InferResult(answer)
        assert result.as_numpy("label").tolist() == native(server.url, images, "fashion-mnist")[1]
    assert answers[0].raw_output_contents == answers[1].raw_output_contents  # the same pixels either way


@pytest.mark.slow
def test_errors_have_their_codes_and_the_rest_detail_text(client: triton.InferenceServerClient, server: Server) -> None:
    one = np.zeros((1, 28, 28), np.uint8)
    code, message = refusal(client.infer, "cifar", [images_input(one)])
    assert code == "NOT_FOUND" and message == rest_error(server.url, "cifar", one)
    assert "unknown model 'cifar'; known models: fashion-mnist, mnist" in message
    assert refusal(client.is_model_ready, "cifar")[0] == "NOT_FOUND"
    wrong = np.zeros((1, 27, 28), np.uint8)
    code, message = refusal(client.infer, "mnist", [images_input(wrong)])
    assert code == "INVALID_ARGUMENT" and message == rest_error(server.url, "mnist", wrong)
    too_many = np.zeros((MAX_IMAGES + 1, 784), np.uint8)
    code, message = refusal(client.infer, "mnist", [images_input(too_many)])
    assert code == "INVALID_ARGUMENT" and message == rest_error(server.url, "mnist", too_many)
    assert message == f"{MAX_IMAGES + 1} images in one request; the limit is {MAX_IMAGES}"
    bright = np.full((1, 784), 2.0, np.float32)
    code, message = refusal(client.infer, "mnist", [images_input(bright, "FP32")])
    assert code == "INVALID_ARGUMENT" and message == rest_error(server.url, "mnist", bright, "FP32")
    assert refusal(client.infer, "mnist", [images_input(one)], outputs=outputs("logits")) == (
        "INVALID_ARGUMENT",
        "outputs must be named from probabilities, label, embedding, reconstruction, reconstruction_error, ood_score, "
        "in_distribution, abstained",
    )
    code, message = refusal(client.infer, "mnist", [images_input(one)], model_version="latest")
    assert code == "INVALID_ARGUMENT" and "not a version number" in message
    code, message = refusal(client.infer, "mnist", [images_input(one)], model_version="7")
    assert code == "NOT_FOUND" and "has no version 7" in message
    assert refusal(client.get_model_repository_index)[0] == "PERMISSION_DENIED"  # no SAE_API_KEYS: the admin API is off


@pytest.mark.slow
def test_a_message_over_the_upload_limit_is_refused_by_grpc(artifacts: Path) -> None:
    with (
        serve(artifacts, SAE_MAX_UPLOAD_BYTES="4096") as server,
        triton.InferenceServerClient(server.address) as client,
    ):
        code, message = refusal(client.infer, "mnist", [images_input(np.zeros((6, 784), np.uint8))])
        assert code == "RESOURCE_EXHAUSTED" and "larger than max" in message
        assert client.infer("mnist", [images_input(np.zeros((1, 784), np.uint8))], client_timeout=TIMEOUT_S)


@pytest.mark.slow
def test_health_service_and_reflection(server: Server) -> None:
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", INFERENCE):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_S)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as unknown:
            health.Check(health_pb2.HealthCheckRequest(service="nothing"), timeout=TIMEOUT_S)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        reflection = ProtoReflectionDescriptorDatabase(channel)
        assert set(reflection.get_services()) == {
            INFERENCE,
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        }
        described = reflection.FindFileContainingSymbol(INFERENCE)
        assert [m.name for m in described.service[0].method][-3:] == [
            "RepositoryIndex",
            "RepositoryModelLoad",
            "RepositoryModelUnload",
        ]


@pytest.mark.slow
def test_request_ids_metrics_and_access_lines(server: Server) -> None:
    request = service_pb2.ModelInferRequest(model_name="mnist")
    request.inputs.add(name="images", datatype="UINT8", shape=[1, 784])
    request.raw_input_contents.append(bytes(784))
    with grpc.insecure_channel(server.address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        _, call = stub.ModelInfer.with_call(request, metadata=[("x-request-id", "grpc-trace-7")], timeout=TIMEOUT_S)
        assert ("x-request-id", "grpc-trace-7") in call.trailing_metadata()
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="cifar"), timeout=TIMEOUT_S)
        assert dict(refused.value.trailing_metadata())["x-request-id"]  # a fresh one
    metrics = httpx.get(f"{server.url}/metrics", timeout=TIMEOUT_S).text
    method = f"/{INFERENCE}/ModelInfer"
    assert f'sae_grpc_requests_total{{code="OK",method="{method}",model="mnist"}}' in metrics
    assert f'sae_grpc_requests_total{{code="NOT_FOUND",method="/{INFERENCE}/ModelMetadata",model="-"}}' in metrics
    assert f'sae_grpc_request_duration_seconds_count{{method="{method}"}}' in metrics
    line = next(x for x in server.log_lines() if x.get("request_id") == "grpc-trace-7")
    assert line["message"] == f"GRPC {method} OK"
    assert (line["route"], line["model"], line["status"], line["batch_images"]) == (method, "mnist", "OK", 1)


@pytest.mark.slow
def test_api_keys_guard_every_call_but_health_and_liveness(artifacts: Path) -> None:
    with serve(artifacts, SAE_API_KEYS="alpha-key,beta-key") as server:
        client = triton.InferenceServerClient(server.address)
        one = [images_input(np.zeros((1, 784), np.uint8))]
        missing = "missing API key: send metadata 'authorization: Bearer <key>' or 'x-api-key: <key>'"
        assert refusal(client.infer, "mnist", one) == ("UNAUTHENTICATED", missing)
        assert refusal(client.get_model_metadata, "mnist") == ("UNAUTHENTICATED", missing)
        assert refusal(client.is_model_ready, "mnist") == ("UNAUTHENTICATED", missing)
        wrong = {"authorization": "Bearer gamma-key"}
        assert refusal(client.infer, "mnist", one, headers=wrong) == ("UNAUTHENTICATED", "invalid API key")
        for headers in ({"authorization": "Bearer alpha-key"}, {"x-api-key": "beta-key"}):
            assert client.infer("mnist", one, headers=headers, client_timeout=TIMEOUT_S).as_numpy("label").shape == (1,)
        assert client.is_server_live(client_timeout=TIMEOUT_S) and client.is_server_ready(client_timeout=TIMEOUT_S)
        client.close()
        with grpc.insecure_channel(server.address) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S)
            assert check.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as reflection:
                list(ProtoReflectionDescriptorDatabase(channel).get_services())
            assert reflection.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.slow
def test_64_concurrent_streams_each_get_their_own_rows(server: Server, artifacts: Path) -> None:
    pictures = np.stack([digit_like(200 + i) for i in range(256)])
    checkpoint = load_checkpoint(artifacts / "mnist")
    runner = TorchRunner(checkpoint.model, checkpoint.card, checkpoint.judge, torch.device("cpu"))
    served = ServedModel("mnist", checkpoint.card, runner)
    expected = [forward.all_outputs(served, pictures[i : i + 1]) for i in range(len(pictures))]  # unbatched
    forwards_before = forwards(server)

    async def stream(client: triton_aio.InferenceServerClient, first: int) -> list[tuple[int, triton.InferResult]]:
        answers = []
        for i in range(first, len(pictures), 64):
            tensor = images_input(pictures[i : i + 1])
            answers.append((i, await client.infer("mnist", [tensor], client_timeout=TIMEOUT_S)))
        return answers

    async def all_streams() -> list[tuple[int, triton.InferResult]]:
        async with triton_aio.InferenceServerClient(server.address) as client:
            streams = await asyncio.gather(*(stream(client, first) for first in range(64)))
        return [answer for answers in streams for answer in answers]

    answers = asyncio.run(asyncio.wait_for(all_streams(), 120))
    assert sorted(i for i, _ in answers) == list(range(len(pictures)))
    for i, result in answers:
        probabilities = result.as_numpy("probabilities")
        assert np.allclose(probabilities, expected[i].probabilities, atol=1e-6), i
        assert np.allclose(result.as_numpy("embedding"), expected[i].embeddings, atol=1e-6), i
        assert result.as_numpy("label").tolist() == probabilities.argmax(1).tolist()
    assert forwards(server) - forwards_before < len(pictures)  # the calls really shared forward passes


def forwards(server: Server) -> float:
    """Forward passes of the mnist model for inference calls so far."""
    lines = httpx.get(f"{server.url}/metrics", timeout=TIMEOUT_S).text.splitlines()
    count = 'sae_batch_images_count{model="mnist",operation="infer"}'
    return next((float(x.split()[-1]) for x in lines if x.startswith(count)), 0.0)


def grpc_listeners(port: int) -> set[int]:
    """The inodes of the sockets listening on the port (one per process that bound it with SO_REUSEPORT)."""
    inodes = set()
    for table in ("tcp", "tcp6"):  # gRPC listens on IPv4-mapped IPv6 sockets where it can
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
                inodes.add(int(fields[9]))
    return inodes


def socket_inodes(pid: int) -> set[int]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = str(fd.readlink()) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


@pytest.mark.slow
def test_every_worker_binds_the_grpc_port(artifacts: Path) -> None:
    with serve(artifacts, SAE_WORKERS="2") as server:
        port = int(server.address.rsplit(":", 1)[1])
        deadline = time.monotonic() + 60  # the server answered once one worker was up; the other follows
        while len(grpc_listeners(port)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = workers_of(server.process.pid)
        listeners = grpc_listeners(port)
        assert len(workers) == 2 and len(listeners) == 2
        assert all(socket_inodes(pid) & listeners for pid in workers)  # each worker holds one of them
        assert not socket_inodes(server.process.pid) & listeners  # the supervisor none
        for _ in range(8):  # new connections, spread by the kernel
            with triton.InferenceServerClient(server.address) as client:
                result = client.infer("mnist", [images_input(np.zeros((1, 784), np.uint8))], client_timeout=TIMEOUT_S)
                assert result.as_numpy("label").shape == (1,)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_trained_models_over_grpc_score_their_cards_accuracy(name: str) -> None:
    data = load_dataset(name)
    images, labels = data.test_images.numpy(), data.test_labels.numpy()
    with serve(require_trained_artifacts(), SAE_LOG_LEVEL="warning") as server:
        with triton.InferenceServerClient(server.address) as client:
            predicted = [
                client.infer(
                    name, [images_input(images[start : start + MAX_IMAGES])], outputs=outputs("label")
                ).as_numpy("label")
                for start in range(0, len(images), MAX_IMAGES)
            ]
        card = next(
            m for m in httpx.get(f"{server.url}/models", timeout=TIMEOUT_S).json()["models"] if m["name"] == name
        )
    assert float(np.mean(np.concatenate(predicted) == labels)) == card["metrics"]["test_accuracy"]
