"""Where a request's time went, for its Server-Timing header, its log line and the metrics. No HTTP here."""

import asyncio
import contextvars
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

Args = ParamSpec("Args")
Result = TypeVar("Result")


@dataclass(frozen=True)
class ForwardTiming:
    """The forward pass that answered a request: how many images it held, how long the request waited
    for it to start, and how long it ran."""

    batch_images: int
    queue_wait_s: float
    forward_s: float


# Set in the request's own context by the micro-batcher and by the routes that decode a body.
forward_timing: contextvars.ContextVar[ForwardTiming | None] = contextvars.ContextVar("forward_timing", default=None)
decode_seconds: contextvars.ContextVar[float | None] = contextvars.ContextVar("decode_seconds", default=None)


def server_timing(decode_s: float | None, forward: ForwardTiming | None) -> str | None:
    """The Server-Timing header value (durations in milliseconds), or None for a request that ran no model."""
    if forward is None:
        return None
    parts = [] if decode_s is None else [f"decode;dur={1000 * decode_s:.3f}"]
    parts += [
        f"queue;dur={1000 * forward.queue_wait_s:.3f}",
        f"forward;dur={1000 * forward.forward_s:.3f}",
        f'batch;desc="{forward.batch_images} images"',
    ]
    return ", ".join(parts)


async def timed_decode(inline: bool, decode: Callable[Args, Result], *args: Args.args, **kwargs: Args.kwargs) -> Result:
    """Decode a request body on the event loop when that is cheaper than a thread hop (`inline`), else in a
    worker thread; the seconds it took go to the request's Server-Timing."""
    started = time.perf_counter()
    if inline:
        result = decode(*args, **kwargs)
    else:
        result = await asyncio.to_thread(decode, *args, **kwargs)
    decode_seconds.set(time.perf_counter() - started)
    return result
