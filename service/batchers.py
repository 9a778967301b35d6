"""One micro-batcher per model and operation, all feeding one forward thread."""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service import inference
from service.batching import MicroBatcher
from service.registry import ServedModel
from service.settings import Settings


class Batchers:
    def __init__(
        self, settings: Settings, observe: Callable[[str, str], Callable[[int, float], None]] | None = None
    ) -> None:
        self.settings = settings
        self.observe = observe  # (model, operation) -> callback(images, seconds waited) for each forward
        # One thread: forwards run one at a time, each using torch's own intra-op threads.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")
        self._batchers: dict[tuple[str, str, int], tuple[ServedModel, MicroBatcher[Any]]] = {}

    def _get(
        self, served: ServedModel, op: str, forward: Callable[[NDArray[np.uint8]], Any], layer: int = 0
    ) -> MicroBatcher[Any]:
        key = (served.name, op, layer)
        known = self._batchers.get(key)
        # A reloaded model gets a new batcher; the old one finishes what it holds, and its worker ends.
        batcher = known[1] if known is not None and known[0] is served else None
        if batcher is None:
            batcher = MicroBatcher(
                forward,
                self.executor,
                self.settings.batch_max_images,
                self.settings.batch_max_wait_ms / 1000,
                self.observe(served.name, op) if self.observe else None,
            )
            self._batchers[key] = (served, batcher)
        return batcher

    async def classify(self, served: ServedModel, pixels: NDArray[np.uint8]) -> inference.Classification:
        result: inference.Classification = await self._get(
            served, "classify", partial(inference.classify, served)
        ).submit(pixels)
        return result

    async def reconstruct(self, served: ServedModel, pixels: NDArray[np.uint8]) -> inference.Reconstructions:
        batcher = self._get(served, "reconstruct", partial(inference.reconstruct, served))
        result: inference.Reconstructions = await batcher.submit(pixels)
        return result

    async def embed(self, served: ServedModel, pixels: NDArray[np.uint8], *, layer: int) -> inference.Floats:
        batcher = self._get(served, "embed", partial(inference.embed, served, layer=layer), layer)
        result: inference.Floats = await batcher.submit(pixels)
        return result

    async def all_outputs(self, served: ServedModel, pixels: NDArray[np.uint8]) -> inference.AllOutputs:
        batcher = self._get(served, "infer", partial(inference.all_outputs, served))
        result: inference.AllOutputs = await batcher.submit(pixels)
        return result

    async def close(self) -> None:
        for _, batcher in self._batchers.values():
            await batcher.close()
        self.executor.shutdown(wait=True)
