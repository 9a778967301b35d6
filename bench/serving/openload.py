"""Open-loop HTTP/1.1 load: requests at a constant arrival rate, whatever the server's answers do.

A closed loop (bench.serving.httpload, wrk) sends the next request only when an answer came back, so an overloaded
server slows its own load down and the overload never shows. Here request i is due at start + i / rate, and is
sent then on an idle keep-alive connection (a new one when none is idle), as wrk2, vegeta and perf_analyzer's
--request-rate-range do. Its latency counts from when it was due, not from when it was sent, so a client that
falls behind cannot hide the server's queue (no coordinated omission). After the last request is due, the run
waits up to `grace_s` for the outstanding answers; any still missing is `unanswered`.

Standard library only (uvloop when installed). `run_open_loop` returns the summary a bench prints.
"""

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from bench.serving.httpload import build_request, percentile, read_response

TRANSPORT_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError)


@dataclass
class Outcomes:
    latencies: dict[str, list[float]] = field(default_factory=dict)  # by status, seconds from when each was due
    lateness: list[float] = field(default_factory=list)  # how late the client sent each request
    connections_opened: int = 0
    started: float = 0.0  # when the first request was due
    last_ok: float = 0.0  # when the last 200 answer came

    def add(self, status: str, seconds: float) -> None:
        self.latencies.setdefault(status, []).append(seconds)
        if status == "200":
            self.last_ok = time.perf_counter()


class Pool:
    """Idle keep-alive connections to one address; a new one whenever none is idle."""

    def __init__(self, host: str, port: int, outcomes: Outcomes) -> None:
        self.host, self.port, self.outcomes = host, port, outcomes
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.open: set[asyncio.StreamWriter] = set()

    async def take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.idle:
            return self.idle.pop()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.outcomes.connections_opened += 1
        self.open.add(writer)
        return reader, writer

    def give_back(self, connection: tuple[asyncio.StreamReader, asyncio.StreamWriter], keep: bool) -> None:
        if keep:
            self.idle.append(connection)
        else:
            self.drop(connection[1])

    def drop(self, writer: asyncio.StreamWriter) -> None:
        self.open.discard(writer)
        writer.close()

    def close(self) -> None:
        for writer in list(self.open):
            self.drop(writer)


async def one_request(pool: Pool, request: bytes, due: float, outcomes: Outcomes) -> None:
    connection = None
    try:
        connection = await pool.take()
        reader, writer = connection
        writer.write(request)
        status, close = await read_response(reader)
        outcomes.add(str(status), time.perf_counter() - due)
        pool.give_back(connection, keep=not close)
    except TRANSPORT_ERRORS:
        outcomes.add("socket_error", time.perf_counter() - due)
        if connection is not None:
            pool.drop(connection[1])
    except asyncio.CancelledError:
        if connection is not None:
            pool.drop(connection[1])
        raise


async def open_loop(url: str, body: bytes, content_type: str, rate: float, seconds: float, grace_s: float) -> Outcomes:
    host, port, request = build_request(url, body, content_type)
    outcomes = Outcomes()
    pool = Pool(host, port, outcomes)
    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter() + 0.05
    outcomes.started = start
    count = int(rate * seconds)
    for i in range(count):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        outcomes.lateness.append(time.perf_counter() - due)
        task = asyncio.create_task(one_request(pool, request, due, outcomes))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(set(tasks), timeout=grace_s)
    unanswered = len(tasks)
    for task in list(tasks):
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks, return_exceptions=True)
    pool.close()
    outcomes.latencies["unanswered"] = [float("inf")] * unanswered
    return outcomes


def run_open_loop(
    url: str, body: bytes, content_type: str, rate: float, seconds: float, grace_s: float = 35.0
) -> dict[str, Any]:
    """Offer `rate` requests a second for `seconds`; summarise: goodput (200 answers a second, from when the first
    request was due to when the last 200 came, as vegeta's throughput counts), each status's count, the 200
    answers' p50/p99 and the refusals' p99 in ms (from when each was due), requests left unanswered, and how late
    the client itself sent its requests (p99)."""
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    outcomes = asyncio.run(open_loop(url, body, content_type, rate, seconds, grace_s))
    ok = sorted(outcomes.latencies.get("200", []))
    refused = sorted(outcomes.latencies.get("503", []))
    lateness = sorted(outcomes.lateness)
    return {
        "offered_per_s": rate,
        "seconds": seconds,
        "statuses": {status: len(values) for status, values in sorted(outcomes.latencies.items()) if values},
        "goodput_per_s": len(ok) / max(seconds, outcomes.last_ok - outcomes.started),
        "ok_p50_ms": 1000 * percentile(ok, 50),
        "ok_p99_ms": 1000 * percentile(ok, 99),
        "ok_max_ms": 1000 * ok[-1] if ok else float("nan"),
        "refused_p99_ms": 1000 * percentile(refused, 99),
        "unanswered": len(outcomes.latencies.get("unanswered", [])),
        "client_late_p99_ms": 1000 * percentile(lateness, 99),
        "connections_opened": outcomes.connections_opened,
    }
