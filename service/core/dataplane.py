"""The data plane: the one object every transport calls, for models, inference, metadata and the repository.

Native REST, the Open Inference Protocol's REST routes and gRPC each translate their requests into calls
here and the answers back, and nothing else. An inference goes one way whatever the transport: the model
looked up, then, within SAE_REQUEST_TIMEOUT_S, the body read by the transport, decoded (on the event loop
when small, else in a worker thread) and run through the model's micro-batcher on the forward thread.
"""

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from models.layout import CARD_FILE, WEIGHTS_FILE
from service import __version__
from service.core.batching import ModelBatchers
from service.core.errors import (
    Forbidden,
    NoModelLoaded,
    NotFound,
    NotReady,
    UndecodableInput,
    quoted,
    within_timeout,
)
from service.core.forward import Operation
from service.core.pixels import Batch, Limits
from service.core.repository import LoadedModels, ModelRepository, Peers, ServedModel
from service.core.settings import Settings
from service.core.telemetry import ServiceMetrics
from service.core.tensors import model_metadata
from service.core.timing import timed_decode
from service.core.versions import Policies, parse_version

log = logging.getLogger("sae_serve")
Parsed = TypeVar("Parsed")
# Decoding this much takes well under a millisecond: cheaper on the event loop than a thread hop.
INLINE_DECODE_BYTES = 16 * 1024
SERVER_NAME = "sae-serve"
REPOSITORY_OFF = "the model repository API is an admin API: set SAE_API_KEYS to enable it"
RELOAD_OFF = "reloading is an admin action: set SAE_API_KEYS to enable /admin/reload (or send SIGHUP)"
SERVER_EXTENSIONS = ("binary_tensor_data",)


@dataclass(frozen=True)
class Body(Generic[Parsed]):
    """A request's input as its transport read it: its size, and how to decode it into pixels and whatever else
    the transport parses with them (its outputs and parameters)."""

    size: int
    decode: Callable[[], tuple[Batch, Parsed]]
    inline: bool = True  # False where decoding is heavy whatever the size (pictures to resize)


class DataPlane:
    """The models, their batchers, limits and metrics of one process, and every operation on them."""

    def __init__(self, settings: Settings, peers: Peers | None = None) -> None:
        self.settings = settings
        self.limits = Limits(
            settings.max_upload_bytes,
            settings.max_batch_images,
            settings.max_image_pixels,
            settings.max_json_bytes,
            settings.max_json_depth,
        )
        self.metrics = ServiceMetrics(settings.metrics_dir)
        self.repository = ModelRepository(
            settings.artifacts_dir,
            settings.runtime,
            settings.device,
            settings.intra_op_threads,
            Policies.parse(settings.version_policy),
            peers,
        )
        self._batchers: ModelBatchers | None = None  # while serving

    # The process's life: load, serve, stop.

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """Load the models (refusing to start without one) and batch their forwards until the block ends."""
        loaded = self.repository.load()
        if not loaded.ready:
            reasons = "; ".join(f"{name}: {why}" for name, why in loaded.failures.items())
            reasons = reasons or f"it holds no checkpoint folder (<name>/{CARD_FILE} and <name>/{WEIGHTS_FILE})"
            log.critical("no model could be loaded from %s (%s); not starting", self.settings.artifacts_dir, reasons)
            raise NoModelLoaded(f"no model could be loaded from {self.settings.artifacts_dir}: {reasons}")
        wait_s = self.settings.batch_max_wait_ms / 1000
        batchers = ModelBatchers(
            self.settings.batch_max_images,
            wait_s,
            self.metrics.batch_observer,
            self.settings.max_pending_images,
            lambda model: self.metrics.queue_refusals.labels(model).inc(),
        )
        # A lifespan run inside another (a test client inside a test client) serves with its own batchers, and
        # hands the outer one's back when it ends.
        outer, self._batchers = self._batchers, batchers
        try:
            yield
        finally:
            await batchers.close()
            self._batchers = outer

    @property
    def batchers(self) -> ModelBatchers:
        if self._batchers is None:
            raise RuntimeError("the data plane is not serving: run it inside `async with plane.serving()`")
        return self._batchers

    def at_capacity(self, model: str) -> bool:
        """Whether a request to `model` would be refused for the pending requests it already holds here."""
        return self._batchers is not None and self._batchers.full(model)

    @property
    def loaded(self) -> LoadedModels:
        return self.repository.loaded

    @property
    def ready(self) -> bool:
        return self.loaded.ready

    # Models and versions.

    def model(self, name: str | None, version: object = None) -> ServedModel:
        """The model a request names (the default model for None), at its newest loaded version or the version
        asked for, in whatever form the transport gives it."""
        chosen = self.settings.default_model if name is None else name
        return find_model(self.loaded, chosen, parse_version(version))

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(SERVER_EXTENSIONS)}

    def model_metadata(self, served: ServedModel) -> dict[str, Any]:
        """The model's inputs and outputs; `versions` lists every loaded version."""
        versions = [str(v) for v in self.loaded.versions[served.name]]
        return model_metadata(
            served.name, versions, served.class_names, served.card.config.hidden_dims[-1], served.ood_summary
        )

    # Inference.

    async def infer(
        self, served: ServedModel, operation: Operation, read: Callable[[], Awaitable[Body[Parsed]]]
    ) -> tuple[Parsed, Any]:
        """Read, decode and run `operation` on the model within the request timeout; the transport's parse of the
        request and the operation's result."""

        async def work() -> tuple[Parsed, Any]:
            body = await read()
            pixels, parsed = await timed_decode(body.inline and body.size <= INLINE_DECODE_BYTES, body.decode)
            return parsed, await self.batchers.run(served, operation, pixels)

        return await within_timeout(work(), self.settings.request_timeout_s)

    # The model repository: admin actions, off unless API keys are set.

    def admin(self, refusal: str) -> "RepositoryAdmin":
        """The admin actions on the repository; 403, saying `refusal`, unless API keys are set. Every transport
        takes them from here, before it reads anything else of the request."""
        if not self.settings.api_keys:
            raise Forbidden(refusal)
        return RepositoryAdmin(self.repository)


class RepositoryAdmin:
    """What an admin may do with the model repository (Triton's repository extension, and reloading)."""

    def __init__(self, repository: ModelRepository) -> None:
        self.repository = repository

    def index(self, ready_only: bool) -> list[dict[str, str]]:
        """Every model and version in the repository with its state (READY or UNAVAILABLE) and why."""
        return [
            {"name": e.name, "version": str(e.version), "state": e.state, "reason": e.reason}
            for e in self.repository.loaded.index
            if e.state == "READY" or not ready_only
        ]

    async def load(self, name: str, parameters: dict[str, Any]) -> None:
        await self.repository.load_model(name, repository_version(parameters))

    async def unload(self, name: str, parameters: dict[str, Any]) -> None:
        # tritonclient always sends unload_dependents; a model here has none.
        await self.repository.unload_model(name, repository_version(parameters, frozenset({"unload_dependents"})))

    async def reload(self) -> tuple[LoadedModels, bool]:
        """Load every model anew, in every worker; the new set replaces the old only if at least one loads."""
        fresh, swapped = await self.repository.reload()
        self.repository.peers.reload_all()  # the supervisor asks every worker, this one included, to reload
        return fresh, swapped


def find_model(loaded: LoadedModels, name: str, version: int | None = None) -> ServedModel:
    """The model's newest loaded version, or the version asked for; on every request, so the answer comes first
    and the reasons are looked up only for a refusal."""
    versions = loaded.versions.get(name)
    if versions is not None:
        if version is None:
            return loaded.models[name]
        if version in versions:
            return versions[version]
    reason = next((e.reason for e in loaded.index if e.name == name and e.version == version), "")
    if versions is None:
        if name not in loaded.failures:
            known = ", ".join(loaded.names) or "none"
            raise NotFound(f"unknown model {quoted(name)}; known models: {known}")
        if reason:
            raise NotReady(f"model {name!r} version {version} is not loaded: {reason}")
        if version is not None:
            raise NotFound(f"model {name!r} has no version {version}; it serves none: {loaded.failures[name]}")
        raise NotReady(f"model {name!r} is not loaded: {loaded.failures[name]}")
    served = ", ".join(map(str, versions))
    if reason:
        raise NotReady(f"model {name!r} version {version} is not loaded: {reason}; loaded versions: {served}")
    raise NotFound(f"model {name!r} has no version {version}; loaded versions: {served}")


def repository_version(parameters: dict[str, Any], ignored: frozenset[str] = frozenset()) -> int | None:
    """The one parameter of a load or unload, `version` (absent: the whole model); `ignored` names parameters
    taken and left unused."""
    unknown = sorted(set(parameters) - {"version"} - ignored)
    if unknown:
        raise UndecodableInput(f"unknown parameters {quoted(unknown)}; the one parameter is 'version'")
    version = parameters.get("version")
    if version == "":  # a version left blank is a mistake, not the whole model: unloading that is no typo's job
        raise UndecodableInput("parameter 'version' is empty; give a version number, or leave the parameter out")
    return parse_version(version)
