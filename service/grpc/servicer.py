"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`): thin, translating to and from the
data plane, as the REST routes under /v2 do.

ModelInfer goes the way `POST /v2/models/{name}/infer` goes (service.core.dataplane): the `images` tensor
checked by service.core.tensors (from `raw_input_contents`, or typed `contents`); the outputs asked for (all by
default) answer in `raw_output_contents`, as Triton answers. Errors are the core's exceptions, which
service.grpc.server turns into status codes. Imported by worker processes only (see service/grpc/server.py).
"""

import contextvars
from typing import Any

import grpc
import numpy as np
from numpy.typing import NDArray

from service.core.dataplane import REPOSITORY_OFF, Body, DataPlane
from service.core.errors import UndecodableInput
from service.core.forward import ALL_OUTPUTS, AllOutputs
from service.core.pixels import Batch, Limits
from service.core.repository import ServedModel
from service.core.tensors import (
    INPUT_NAME,
    MIN_CONFIDENCE,
    image_tensor,
    min_confidence,
    output_names,
    output_tensors,
    raw_values,
    tensor_pixels,
)
from service.grpc.stubs import grpc_predict_v2_pb2 as pb
from service.grpc.stubs import grpc_predict_v2_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]
# Typed contents: the InferTensorContents field of each input datatype, and the values' type there (uint32 for
# UINT8, so that a value over 255 is refused by the pixel check rather than wrapped).
CONTENTS_FIELDS: dict[str, tuple[str, type[np.generic]]] = {
    "UINT8": ("uint_contents", np.uint32),
    "FP32": ("fp32_contents", np.float32),
}
# The model a call was answered by, for its metric and log line: known names only, never the raw request.
rpc_model: contextvars.ContextVar[str] = contextvars.ContextVar("rpc_model", default="-")


def served_model(plane: DataPlane, name: str, version: str) -> ServedModel:
    """The model and version a request names; an empty version is the newest loaded."""
    served = plane.model(name, version)
    rpc_model.set(served.name)
    return served


def typed_values(given: pb.ModelInferRequest.InferInputTensor, datatype: str) -> NDArray[Any]:
    field, dtype = CONTENTS_FIELDS[datatype]
    values = getattr(given.contents, field)
    return np.fromiter(values, dtype=dtype, count=len(values))


def request_pixels(request: pb.ModelInferRequest, limits: Limits) -> Batch:
    """The request's `images` tensor as (N, 28, 28) pixels, through the same checks as the REST protocol's."""
    if len(request.inputs) != 1:
        raise UndecodableInput(f"request needs exactly one input tensor, named '{INPUT_NAME}'")
    given = request.inputs[0]
    tensor = image_tensor(given.name, given.datatype, list(given.shape), limits)
    if not request.raw_input_contents:
        field = CONTENTS_FIELDS[tensor.datatype][0]
        return tensor_pixels(tensor, typed_values(given, tensor.datatype), f"contents.{field}")
    if len(request.raw_input_contents) != 1 or given.HasField("contents"):
        raise UndecodableInput("send the input's values either in raw_input_contents (one entry) or in its contents")
    raw = request.raw_input_contents[0]
    return tensor_pixels(tensor, raw_values(tensor, raw, f"raw_input_contents of {len(raw)} bytes"), "input data")


def infer_parameter(given: Any, name: str) -> object:
    """A request parameter's value (whichever of InferParameter's fields holds it), or None."""
    if name not in given:
        return None
    choice = given[name].WhichOneof("parameter_choice")
    return getattr(given[name], choice) if choice else None


def infer_response(
    served: ServedModel,
    request: pb.ModelInferRequest,
    names: tuple[str, ...],
    result: AllOutputs,
    threshold: float = 0.0,
) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=served.name, model_version=str(served.version), id=request.id)
    for name, datatype, array in output_tensors(result, names, threshold):
        response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        response.raw_output_contents.append(array.tobytes())
    return response


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The RPCs, each a few lines over the data plane."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.plane.ready)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        served_model(self.plane, request.name, request.version)
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Context) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**self.plane.server_metadata())

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Context) -> pb.ModelMetadataResponse:
        metadata = self.plane.model_metadata(served_model(self.plane, request.name, request.version))
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=metadata["name"],
            versions=metadata["versions"],
            platform=metadata["platform"],
            inputs=[tensor(**t) for t in metadata["inputs"]],
            outputs=[tensor(**t) for t in metadata["outputs"]],
        )

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        served = served_model(self.plane, request.model_name, request.model_version)
        threshold = min_confidence(infer_parameter(request.parameters, MIN_CONFIDENCE))
        names = output_names([o.name for o in request.outputs], threshold)
        limits = self.plane.limits

        async def read() -> Body[None]:
            return Body(request.ByteSize(), lambda: (request_pixels(request, limits), None))

        _, result = await self.plane.infer(served, ALL_OUTPUTS, read)
        return infer_response(served, request, names, result, threshold or 0.0)

    # Triton's model repository extension (the end of proto/grpc_predict_v2.proto), as the REST routes in
    # service/http/repository.py serve it: admin only, and a `version` parameter loads or unloads one version.

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Context) -> pb.RepositoryIndexResponse:
        entries = self.plane.admin(REPOSITORY_OFF).index(request.ready)
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**e) for e in entries])

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> pb.RepositoryModelLoadResponse:
        await self.plane.admin(REPOSITORY_OFF).load(request.model_name, parameters(request.parameters))
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> pb.RepositoryModelUnloadResponse:
        await self.plane.admin(REPOSITORY_OFF).unload(request.model_name, parameters(request.parameters))
        return pb.RepositoryModelUnloadResponse()


def parameters(given: Any) -> dict[str, Any]:
    """A map of ModelRepositoryParameter as plain values."""
    values = {}
    for key, parameter in given.items():
        choice = parameter.WhichOneof("parameter_choice")
        values[key] = getattr(parameter, choice) if choice else None
    return values
