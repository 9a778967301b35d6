"""Hostile and confused gRPC clients against a real server: bytes that are not a message, fields of megabytes, and a
property-based fuzz of the Open Inference Protocol's messages. Every one gets INVALID_ARGUMENT or another answer
that says what was wrong, never UNKNOWN or INTERNAL, and the server serves on; so do the streaming calls (health's
Watch, reflection).

The messages are tritonclient's (the same proto); nothing here imports service.grpc.stubs, whose descriptors would
clash with them in one process.
"""

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.checkpoints import write_tiny_artifacts
from tests.service.grpc.calls import TIMEOUT_S
from tests.service.grpc.servers import Server, serve

pytestmark = pytest.mark.slow
INFER = "/inference.GRPCInferenceService/ModelInfer"
# Long enough to see what was sent, short enough to never echo a client's megabytes: the quoted prefix (about 100
# characters) and the sentence around it.
MAX_DETAIL_CHARACTERS = 400
ANSWERED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(write_tiny_artifacts(tmp_path_factory.mktemp("artifacts")), SAE_API_KEYS="") as running:
        yield running


def raw_call(address: str, method: str, payload: bytes, metadata: tuple[tuple[str, str], ...] = ()) -> grpc.RpcError:
    """Send `payload` as the request's bytes, as they are; the call must fail."""
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(method)  # no serializers: the bytes go out untouched
        with pytest.raises(grpc.RpcError) as failed:
            call(payload, metadata=metadata, timeout=TIMEOUT_S)
    return failed.value


def infer_request(**fields: object) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="mnist")
    tensor = request.inputs.add(name="images", datatype="UINT8", shape=[1, 784])
    for name, value in fields.items():
        target = tensor if name in ("name", "datatype") else request
        if name == "shape":
            del tensor.shape[:]
            tensor.shape.extend(value)  # type: ignore[call-overload]
        else:
            setattr(target, name, value)
    request.raw_input_contents.append(bytes(784))
    return request


def infer(address: str, request: service_pb2.ModelInferRequest) -> grpc.StatusCode:
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            stub.ModelInfer(request, timeout=TIMEOUT_S)
        except grpc.RpcError as e:
            return e.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def undecodable_payloads() -> list[bytes]:
    whole = infer_request().SerializeToString()
    not_utf8 = infer_request(model_name="mn\u00ffst").SerializeToString().replace(b"mn\xc3\xbfst", b"mn\xffst")
    return [b"\xff\xff\xff\xff", whole[: len(whole) // 2], not_utf8]


def test_bytes_that_are_not_a_message_are_invalid_argument_counted_and_logged(server: Server) -> None:
    for payload in undecodable_payloads():
        refused = raw_call(server.address, INFER, payload)
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.details()
        assert f"the {len(payload):,} bytes sent are not a message of type inference.ModelInferRequest" in str(
            refused.details()
        )
    metrics = httpx.get(f"{server.url}/metrics", timeout=TIMEOUT_S).text
    counted = next(line for line in metrics.splitlines() if 'code="INVALID_ARGUMENT",method="' + INFER in line)
    assert float(counted.rsplit(" ", 1)[1]) >= 3
    lines = server.log_lines()
    assert sum(1 for x in lines if x.get("route") == INFER and x.get("status") == "INVALID_ARGUMENT") >= 3
    assert not [x for x in lines if "exception" in x or x.get("level") == "error"]  # no traceback, no error line


WATCH = "/grpc.health.v1.Health/Watch"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def test_streaming_calls_refuse_bytes_that_are_not_a_message_and_serve_those_that_are(server: Server) -> None:
    """Health's Watch (one request, a stream of answers) and reflection (streams both ways) as the unary calls."""
    good_reflection = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()
    with grpc.insecure_channel(server.address) as channel:
        watch = channel.unary_stream(WATCH)
        with pytest.raises(grpc.RpcError) as refused:
            next(iter(watch(b"\xff\xff\xff\xff", timeout=TIMEOUT_S)))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "the 4 bytes sent are not a message of type grpc.health.v1.HealthCheckRequest" in str(
            refused.value.details()
        )
        reflect = channel.stream_stream(REFLECTION)
        with pytest.raises(grpc.RpcError) as refused:
            list(reflect(iter([good_reflection, b"\xff\xff"]), timeout=TIMEOUT_S))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "grpc.reflection.v1alpha.ServerReflectionRequest" in str(refused.value.details())

        first = next(
            iter(health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S))
        )
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        answers = list(
            reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=TIMEOUT_S
            )
        )
        names = [s.name for s in answers[0].list_services_response.service]
        assert "inference.GRPCInferenceService" in names
    lines = server.log_lines()
    for method in (WATCH, REFLECTION):
        assert any(x.get("route") == method and x.get("status") == "INVALID_ARGUMENT" for x in lines), method
    assert not [x for x in lines if "exception" in x or x.get("level") == "error"]


def test_a_refused_key_is_said_before_the_bytes_are_read(tmp_path: Path) -> None:
    with serve(write_tiny_artifacts(tmp_path / "artifacts"), SAE_API_KEYS="secret") as keyed:
        refused = raw_call(keyed.address, INFER, b"\xff\xff\xff\xff")
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
        keyed_call = raw_call(keyed.address, INFER, b"\xff\xff\xff\xff", (("authorization", "Bearer secret"),))
        assert keyed_call.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "x" * 1_000_000},
        {"datatype": "FP" * 500_000},
        {"shape": list(range(200_000))},
        {"model_version": "9" * 1_000_000},
        {"model_name": "m" * 1_000_000},
    ],
    ids=["input name", "datatype", "shape", "version", "model name"],
)
def test_error_texts_quote_a_bounded_prefix_of_what_was_sent(server: Server, fields: dict[str, object]) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(infer_request(**fields), timeout=TIMEOUT_S)
    assert refused.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    detail = str(refused.value.details())
    assert len(detail) <= MAX_DETAIL_CHARACTERS and "(cut: " in detail, detail[:500]


@pytest.mark.parametrize(
    ("tensor", "size"),
    [
        ({"name": "x" * 1_000_000}, "1,000,000 characters"),
        ({"name": "\x00" * 100_000}, "100,000 characters"),
        ({"parameters": {"binary_data_size": "9" * 100_000}}, "100,000 characters"),
        ({"parameters": {"binary_data_size": list(range(50_000))}}, "50,000 items"),
    ],
    ids=["long name", "escaped name", "long binary_data_size", "list binary_data_size"],
)
def test_rest_quotes_a_bounded_prefix_too(server: Server, tensor: dict[str, object], size: str) -> None:
    given = {"name": "images", "shape": [1, 784], "datatype": "UINT8", "data": [0] * 784, **tensor}
    answer = httpx.post(f"{server.url}/v2/models/mnist/infer", json={"inputs": [given]}, timeout=TIMEOUT_S)
    assert answer.status_code == 400 and len(answer.text) <= MAX_DETAIL_CHARACTERS + 20, answer.text[:500]
    assert f"(cut: {size} in all)" in answer.json()["error"]


names = st.text(max_size=40) | st.text(min_size=150, max_size=400)  # the long ones are quoted cut
tensors = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["images", "image", ""]) | names,
        "datatype": st.sampled_from(["UINT8", "FP32", "INT64", "BYTES", ""]) | names,
        "shape": st.lists(st.integers(-(2**63), 2**63 - 1), max_size=6),
    }
)
requests = st.fixed_dictionaries(
    {
        "model_name": st.sampled_from(["mnist", "fashion-mnist", ""]) | names,
        "model_version": st.sampled_from(["", "1", "2", "0", "-1"]) | names,
        "inputs": st.lists(tensors, max_size=3),
        "raw": st.lists(st.binary(max_size=3200), max_size=3),
        "outputs": st.lists(st.sampled_from(["label", "probabilities", "nope", ""]), max_size=3),
        "min_confidence": st.none() | st.floats(allow_nan=True, allow_infinity=True),
    }
)


def built(fields: dict[str, object]) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=fields["model_name"], model_version=fields["model_version"])
    for tensor in fields["inputs"]:  # type: ignore[attr-defined]
        request.inputs.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
    request.raw_input_contents.extend(fields["raw"])  # type: ignore[arg-type]
    for name in fields["outputs"]:  # type: ignore[attr-defined]
        request.outputs.add(name=name)
    if fields["min_confidence"] is not None:
        request.parameters["min_confidence"].double_param = fields["min_confidence"]  # type: ignore[assignment]
    return request


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=requests)
def test_fuzzed_messages_are_answered_never_with_unknown_or_internal(server: Server, fields: dict[str, object]) -> None:
    with grpc.insecure_channel(server.address) as channel:
        try:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(built(fields), timeout=TIMEOUT_S)
        except grpc.RpcError as e:
            assert e.code() in ANSWERED, e.details()
            assert len(str(e.details())) <= MAX_DETAIL_CHARACTERS, str(e.details())[:500]


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=4000))
def test_fuzzed_bytes_are_answered_never_with_unknown_or_internal(server: Server, payload: bytes) -> None:
    with grpc.insecure_channel(server.address) as channel:
        try:
            channel.unary_unary(INFER)(payload, timeout=TIMEOUT_S)
        except grpc.RpcError as e:
            assert e.code() in ANSWERED, e.details()


def test_the_server_still_serves_after_all_that(server: Server) -> None:
    assert infer(server.address, infer_request()) == grpc.StatusCode.OK
    assert server.process.poll() is None
