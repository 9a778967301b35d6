"""A worker's gRPC server on SAE_HOST:SAE_GRPC_PORT, started in the app's lifespan on its event loop: the Open
Inference Protocol (service/grpc/servicer.py), the standard health service and server reflection.

Only a worker imports grpc (service/app.py imports this module inside the lifespan): the supervisor forks its
workers, and gRPC's core must not be initialised in a process that forks. Several workers each bind the same
port with SO_REUSEPORT, and the kernel spreads the connections among them.

One interceptor does for every call what the HTTP middlewares do for a request: checks the API key when
SAE_API_KEYS is set (the health service, ServerLive and ServerReady are open), gives the call a request id (the
client's `x-request-id`, or a new one, returned in the trailing metadata), turns the service's errors into status
codes with the same detail text as REST, and counts, times and logs the call.
"""

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, NoReturn, TypeAlias, cast

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.core.dataplane import DataPlane
from service.core.errors import ServiceError, UndecodableInput
from service.core.keys import key_matches, presented_key
from service.core.telemetry import REQUEST_ID_HEADER, ServiceMetrics, log_access, request_id_from
from service.grpc.servicer import Context, InferenceServicer, rpc_model
from service.grpc.stubs import grpc_predict_v2_pb2 as pb
from service.grpc.stubs import grpc_predict_v2_pb2_grpc as pb_grpc

log = logging.getLogger("sae_serve")
Behavior = Callable[[Any, Context], Awaitable[Any]]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic to type checkers only

INFERENCE_SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
# Open to all when API keys are set, as /health/* and /v2/health/* are over HTTP.
OPEN_METHODS = frozenset({f"/{INFERENCE_SERVICE}/ServerLive", f"/{INFERENCE_SERVICE}/ServerReady"})
OPEN_SERVICE_PREFIX = f"/{health.SERVICE_NAME}/"
MISSING_KEY = "missing API key: send metadata 'authorization: Bearer <key>' or 'x-api-key: <key>'"
# The service's errors carry their HTTP status; over gRPC each becomes the code that means the same. Too many
# images (413) is INVALID_ARGUMENT, as Triton answers a batch over a model's max_batch_size; a message over
# SAE_MAX_UPLOAD_BYTES never reaches the service: gRPC refuses it with RESOURCE_EXHAUSTED.
STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    406: grpc.StatusCode.INVALID_ARGUMENT,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}


def metadata_value(metadata: Any, name: str) -> str:
    """A text metadata entry of a call ("" when absent); gRPC gives the names in lower case."""
    return next((value for key, value in metadata or () if key == name and isinstance(value, str)), "")


def handler_like(handler: Handler, behavior: Behavior, raw_requests: bool = False) -> Handler:
    """A handler of the same kind (unary or streaming each way) and message types, running `behavior` instead;
    with `raw_requests`, `behavior` is handed the request's bytes, to decode itself."""
    streaming = (handler.request_streaming, handler.response_streaming)
    make: Any = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[streaming]
    handler_made: Handler = make(
        behavior,
        request_deserializer=None if raw_requests else handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
    return handler_made


def decoding(deserialize: Callable[[bytes], Any] | None, behavior: Behavior) -> Behavior:
    """`behavior` on the message decoded from the call's bytes. grpcio would decode them before any interceptor
    runs, and answer bytes that do not decode with UNKNOWN, uncounted and with a traceback: here they are the
    client's mistake, INVALID_ARGUMENT, counted and logged like any other."""
    name = message_name(deserialize)

    async def call(raw: bytes, context: Context) -> Any:
        try:
            request = deserialize(raw) if deserialize is not None else raw
        except DecodeError:
            raise not_a_message(raw, name) from None
        return await behavior(request, context)

    return call


def message_name(deserialize: Callable[[bytes], Any] | None) -> str:
    """The full name of the message type `deserialize` makes ("request" where it cannot tell)."""
    message = getattr(getattr(deserialize, "__self__", None), "DESCRIPTOR", None)
    return message.full_name if message is not None else "request"


def not_a_message(raw: bytes, name: str) -> UndecodableInput:
    return UndecodableInput(
        f"the {len(raw):,} bytes sent are not a message of type {name}: cut short, corrupted, or holding text "
        "that is not UTF-8"
    )


class CallInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, keys: list[str], metrics: ServiceMetrics) -> None:
        self.keys = [key.encode() for key in keys]
        self.metrics = metrics

    async def intercept_service(
        self,
        continuation: "Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]",
        handler_call_details: grpc.HandlerCallDetails,
    ) -> "Handler | None":
        handler = await continuation(handler_call_details)
        if handler is None:  # no such method: gRPC answers UNIMPLEMENTED
            return None
        method = handler_call_details.method
        refusal = self.refusal(method, handler_call_details.invocation_metadata)
        if handler.request_streaming or handler.response_streaming:  # reflection and health's Watch
            if refusal is not None:
                return handler_like(handler, refused(refusal))
            return handler_like(handler, self.decoding_stream(method, handler), raw_requests=True)
        # On grpc.aio a unary handler's behavior is the servicer's coroutine method. The key is checked before the
        # request is decoded: a refused caller's bytes are never parsed.
        servicer = cast(Behavior, handler.unary_unary)
        behavior = decoding(handler.request_deserializer, servicer) if refusal is None else refused(refusal)
        return handler_like(handler, self.accounted(method, behavior), raw_requests=True)

    def refusal(self, method: str, metadata: Any) -> str | None:
        """Why the call is refused for its API key, or None."""
        if not self.keys or method in OPEN_METHODS or method.startswith(OPEN_SERVICE_PREFIX):
            return None
        names = (b"authorization", b"x-api-key")
        key = presented_key({name: metadata_value(metadata, name.decode()).encode() for name in names})
        if key is None:
            return MISSING_KEY
        return None if key_matches(key, self.keys) else "invalid API key"

    def accounted(self, method: str, behavior: Behavior) -> Behavior:
        """`behavior` with a request id, its errors as status codes, and its metric and log line."""

        async def call(request: Any, context: Context) -> Any:
            request_id = request_id_from(metadata_value(context.invocation_metadata(), REQUEST_ID_HEADER))
            context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
            code = grpc.StatusCode.OK
            started = time.perf_counter()
            try:
                return await behavior(request, context)
            except ServiceError as e:
                code = STATUS_CODES.get(e.status_code, grpc.StatusCode.INVALID_ARGUMENT)
                await context.abort(code, e.detail)
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:  # the client went away, or its deadline passed
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("gRPC call %s to %s failed", request_id, method)
                await context.abort(code, f"internal error; quote request id {request_id} when reporting it")
            finally:
                self.account(method, code, time.perf_counter() - started, request_id)

        return call

    def decoding_stream(self, method: str, handler: Handler) -> Behavior:
        """A streaming call's behavior on messages decoded from its bytes, as `decoding` does for unary calls: a
        message that does not decode ends the call with INVALID_ARGUMENT, counted and logged as one access line.
        The behavior is a coroutine (health's Watch writes through its context) or an async generator (reflection
        yields); the requests are one message or a stream of them."""
        deserialize = handler.request_deserializer
        behavior: Any = handler.unary_stream or handler.stream_stream or handler.stream_unary  # on grpc.aio: async
        generates = inspect.isasyncgenfunction(behavior)
        started = time.perf_counter()
        account = self.account

        name = message_name(deserialize)

        async def refuse(raw: bytes, context: Context) -> NoReturn:
            detail = not_a_message(raw, name)
            request_id = request_id_from(metadata_value(context.invocation_metadata(), REQUEST_ID_HEADER))
            account(method, grpc.StatusCode.INVALID_ARGUMENT, time.perf_counter() - started, request_id)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, detail.detail)
            raise AssertionError("abort returns only by raising")  # pragma: no cover

        async def decoded(raw: bytes, context: Context) -> Any:
            try:
                return deserialize(raw) if deserialize is not None else raw
            except DecodeError:
                await refuse(raw, context)

        async def requests(raw: Any, context: Context) -> Any:
            if not handler.request_streaming:
                return await decoded(raw, context)

            async def each() -> AsyncIterator[Any]:
                async for message in raw:
                    yield await decoded(message, context)

            return each()

        if generates:

            async def stream(raw: Any, context: Context) -> AsyncIterator[Any]:
                async for response in behavior(await requests(raw, context), context):
                    yield response

            return cast(Behavior, stream)  # grpc.aio takes an async generator where a coroutine would do

        async def call(raw: Any, context: Context) -> Any:
            return await behavior(await requests(raw, context), context)

        return call

    def account(self, method: str, code: grpc.StatusCode, seconds: float, request_id: str) -> None:
        model = rpc_model.get()
        self.metrics.grpc_requests.labels(method, model, code.name).inc()
        self.metrics.grpc_latency.labels(method).observe(seconds)
        log_access(request_id, "GRPC", method, model, code.name, seconds)


def refused(detail: str) -> Behavior:
    async def refuse(request: Any, context: Context) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, detail)

    return refuse


class ReadinessHealth(health.aio.HealthServicer):
    """grpc.health.v1: SERVING while a model is loaded (as /health/ready answers 200), read anew on every Check,
    for the server ("") and the inference service; NOT_SERVING for good once the server stops."""

    def __init__(self, plane: DataPlane) -> None:
        super().__init__()
        self.plane = plane

    async def follow_readiness(self) -> None:
        ready = self.plane.ready
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in (health.OVERALL_HEALTH, INFERENCE_SERVICE):
            await self.set(service, status)  # a no-op once shutting down

    async def Check(
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.aio.ServicerContext[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse],
    ) -> health_pb2.HealthCheckResponse:
        await self.follow_readiness()
        return await super().Check(request, context)


def listen_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class GrpcServer:
    """A started server; stop() lets the calls in flight finish, up to SAE_GRACEFUL_SHUTDOWN_S."""

    def __init__(self, server: grpc.aio.Server, health_servicer: ReadinessHealth, grace_s: float) -> None:
        self.server, self.health, self.grace_s = server, health_servicer, grace_s

    async def stop(self) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.grace_s)
        log.info("gRPC server stopped")


async def start_grpc_server(plane: DataPlane) -> GrpcServer:
    """Serve gRPC on SAE_HOST:SAE_GRPC_PORT over this process's data plane."""
    settings = plane.settings
    server = grpc.aio.server(
        interceptors=[CallInterceptor(settings.api_keys, plane.metrics)],
        options=[
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),  # workers share the port; else a clash fails
            ("grpc.max_receive_message_length", settings.max_upload_bytes),
        ],
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(plane), server)  # type: ignore[no-untyped-call]
    health_servicer = ReadinessHealth(plane)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([INFERENCE_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    address = listen_address(settings.host, settings.grpc_port)
    try:
        server.add_insecure_port(address)
    except RuntimeError as e:
        raise RuntimeError(f"gRPC cannot listen on {address} (SAE_GRPC_PORT; 0 turns gRPC off): {e}") from e
    await server.start()
    await health_servicer.follow_readiness()
    log.info("gRPC serving on %s", address)
    return GrpcServer(server, health_servicer, settings.graceful_shutdown_s)


@asynccontextmanager
async def serving_grpc(plane: DataPlane) -> AsyncIterator[None]:
    """gRPC served while the block runs; stopped at its end, letting the calls in flight finish."""
    server = await start_grpc_server(plane)
    try:
        yield
    finally:
        await server.stop()
