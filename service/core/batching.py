"""Dynamic micro-batching: concurrent requests for the same model and operation share one forward pass.

A request's images join a queue. The worker takes the first waiting request and everything queued
behind it, up to `max_batch_images`; if that batch is not full and more requests are already on
their way, it waits for them until `max_wait_s` after the first one arrived. A lone request, with
nothing else queued, goes at once; when no forward is running either, it skips the queue and goes
straight to the forward thread. While one forward runs the next batch fills, so under load batches
grow by themselves. Each request gets back exactly its own rows.

`ModelBatchers` keeps one such batcher per model and operation (service.core.forward.Operation), all feeding
one forward thread, and bounds each model's pending images (those of its requests queued in any of its batchers,
waiting for the forward thread, or in a forward pass): a request that finds `max_pending_images` or more already
pending is refused at once with `Overloaded`, as Triton's max_queue_size and Ray Serve's max_queued_requests refuse,
rather than left to wait out its timeout. The bound is in images, not requests, because the wait it bounds is: a
request waits for the images ahead of it. Any request is taken while the model is under its bound, a large one as a
small one (so that none starves under a stream of small ones); the pending images stay under the bound plus one
request's images.
"""

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

from service.core.errors import Overloaded, quoted
from service.core.forward import Operation
from service.core.repository import ServedModel
from service.core.timing import ForwardTiming, forward_timing

Result = TypeVar("Result")


def take_rows(result: Any, start: int, stop: int) -> Any:
    """Rows start:stop of every array field of a dataclass result, or of an array."""
    if isinstance(result, np.ndarray):
        return result[start:stop]
    return dataclasses.replace(
        result, **{f.name: getattr(result, f.name)[start:stop] for f in dataclasses.fields(result)}
    )


@dataclass
class _Pending:
    pixels: NDArray[np.uint8]
    future: asyncio.Future[Any]
    arrived: float = field(default_factory=time.monotonic)
    timing: ForwardTiming | None = None


class MicroBatcher(Generic[Result]):
    def __init__(
        self,
        forward: Callable[[NDArray[np.uint8]], Result],
        executor: Executor,
        max_batch_images: int,
        max_wait_s: float,
        on_batch: Callable[[int, float, float], None] | None = None,
    ) -> None:
        self.forward = forward
        self.executor = executor
        self.max_batch_images = max_batch_images
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._held: _Pending | None = None  # a request that did not fit the last batch goes first in the next
        self._in_flight = 0  # forwards started and not yet finished

    async def submit(self, pixels: NDArray[np.uint8]) -> Result:
        """Run `forward` on these images, batched with whatever else is waiting; return their rows."""
        loop = asyncio.get_running_loop()
        if self._in_flight == 0 and self._queue.empty() and self._held is None:
            # Nothing running, nothing waiting: go straight to the forward thread, skipping the queue.
            result, seconds = await self._forward(loop, pixels, 0.0)
            forward_timing.set(ForwardTiming(len(pixels), 0.0, seconds))
            return result
        future: asyncio.Future[Result] = loop.create_future()
        pending = _Pending(pixels, future)
        self._queue.put_nowait(pending)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run())
        result = await future
        forward_timing.set(pending.timing)
        return result

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    def _fits(self, item: _Pending, size: int) -> bool:
        return size + len(item.pixels) <= self.max_batch_images

    async def _next(self, timeout: float) -> _Pending | None:
        """The held-over request, else the next queued one (waiting up to `timeout`; None if none came)."""
        if self._held is not None:
            item, self._held = self._held, None
            return item
        if timeout <= 0:
            return self._queue.get_nowait() if not self._queue.empty() else None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def _run(self) -> None:
        """Serve batches while requests wait, then end; the next submit starts a new worker."""
        loop = asyncio.get_running_loop()
        while self._held is not None or not self._queue.empty():
            first = await self._next(0.0)
            assert first is not None
            batch, size = [first], len(first.pixels)
            await asyncio.sleep(0)  # let requests that arrived together reach the queue
            deadline = first.arrived + self.max_wait_s
            while size < self.max_batch_images:
                if self._held is not None or not self._queue.empty():
                    item = await self._next(0.0)
                elif len(batch) > 1 and time.monotonic() < deadline:
                    item = await self._next(deadline - time.monotonic())  # others are arriving: wait for more
                else:
                    break  # a lone request goes at once
                if item is None:
                    break
                if not self._fits(item, size):
                    self._held = item
                    break
                batch.append(item)
                size += len(item.pixels)
            await self._dispatch(loop, batch)

    async def _forward(
        self, loop: asyncio.AbstractEventLoop, pixels: NDArray[np.uint8], waited: float
    ) -> tuple[Result, float]:
        """The forward's result and the seconds it took, queue excluded."""
        self._in_flight += 1
        started = time.perf_counter()
        try:
            result = await loop.run_in_executor(self.executor, self.forward, pixels)
        finally:
            self._in_flight -= 1
        seconds = time.perf_counter() - started
        if self.on_batch is not None:
            self.on_batch(len(pixels), waited, seconds)
        return result, seconds

    async def _dispatch(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        live = [p for p in batch if not p.future.done()]  # a client that went away needs no answer
        if not live:
            return
        pixels = live[0].pixels if len(live) == 1 else np.concatenate([p.pixels for p in live])
        starting = time.monotonic()
        try:
            result, seconds = await self._forward(loop, pixels, starting - live[0].arrived)
        except Exception as e:  # every waiting request learns of the failure; the worker carries on
            for p in live:
                if not p.future.done():
                    p.future.set_exception(e)
            return
        start = 0
        for p in live:
            p.timing = ForwardTiming(len(pixels), starting - p.arrived, seconds)
            stop = start + len(p.pixels)
            if not p.future.done():
                p.future.set_result(take_rows(result, start, stop) if len(live) > 1 else result)
            start = stop


class ModelBatchers:
    """One micro-batcher per model and operation, all feeding one forward thread."""

    def __init__(
        self,
        max_batch_images: int,
        max_wait_s: float,
        observe: Callable[[str, str], Callable[[int, float, float], None]] | None = None,
        max_pending_images: int = 0,
        on_refusal: Callable[[str], None] | None = None,
    ) -> None:
        self.max_batch_images, self.max_wait_s = max_batch_images, max_wait_s
        self.max_pending_images = max_pending_images  # per model; 0: no bound
        self.on_refusal = on_refusal  # (model) -> None, for each request refused
        self._pending: dict[str, int] = {}  # each model's images admitted and not yet answered
        self.observe = observe  # (model, operation) -> callback(images, seconds waited, seconds computed)
        # One thread: forwards run one at a time, each using torch's own intra-op threads.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")
        self._batchers: dict[tuple[str, str, int], tuple[ServedModel, MicroBatcher[Any]]] = {}

    def batcher_for(self, served: ServedModel, operation: Operation) -> MicroBatcher[Any]:
        key = (served.name, operation.name, operation.layer)
        known = self._batchers.get(key)
        # A reloaded model gets a new batcher; the old one finishes what it holds, and its worker ends.
        batcher = known[1] if known is not None and known[0] is served else None
        if batcher is None:
            batcher = MicroBatcher(
                partial(operation.forward, served),
                self.executor,
                self.max_batch_images,
                self.max_wait_s,
                self.observe(served.name, operation.name) if self.observe else None,
            )
            self._batchers[key] = (served, batcher)
        return batcher

    def pending(self, model: str) -> int:
        """The model's images admitted and not yet answered, over its operations and versions."""
        return self._pending.get(model, 0)

    def full(self, model: str) -> bool:
        """Whether the model has its bound's images pending or more: the next request is refused."""
        return bool(self.max_pending_images) and self._pending.get(model, 0) >= self.max_pending_images

    def refusal(self, model: str) -> Overloaded:
        """The refusal of one request to a full model, counted."""
        if self.on_refusal is not None:
            self.on_refusal(model)
        return Overloaded(
            f"model {quoted(model)} is at capacity: {self.pending(model)} images already wait for it here (the bound "
            f"is {self.max_pending_images}); try again in a moment or on another replica"
        )

    async def run(self, served: ServedModel, operation: Operation, pixels: NDArray[np.uint8]) -> Any:
        """The operation's result for these images, batched with the same model's and operation's other requests;
        `Overloaded` at once where the model already has its bound's images pending."""
        name, images = served.name, len(pixels)
        if self.full(name):
            raise self.refusal(name)
        self._pending[name] = self._pending.get(name, 0) + images
        try:
            return await self.batcher_for(served, operation).submit(pixels)
        finally:
            self._pending[name] -= images

    async def close(self) -> None:
        for _, batcher in self._batchers.values():
            await batcher.close()
        self.executor.shutdown(wait=True)
