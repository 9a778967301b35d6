"""Closed-loop HTTP/1.1 load: keep-alive connections spread over processes, each posting one body in a loop.

Standard library only (uvloop when installed), so it runs wherever Python does, wrk or not. Each
connection sends its next request when the last answer has been read in full; the run counts answers
by status, socket errors, and every answer's latency. Prints one JSON object:

    python -m bench.serving.httpload http://127.0.0.1:8000/classify --body FILE --content-type image/png \
        [--connections 64] [--seconds 5] [--processes 4]
"""

import argparse
import asyncio
import json
import multiprocessing
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


def build_request(url: str, body: bytes, content_type: str) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    head = (
        f"POST {target} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return host, port, head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one whole answer; return its status and whether the server will close the connection."""
    status_line = await reader.readuntil(b"\r\n")
    status = int(status_line.split()[1])
    length, chunked, close = 0, False, False
    while True:
        line = await reader.readuntil(b"\r\n")
        if line == b"\r\n":
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            close = b"close" in value.lower()
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(length)
    return status, close


async def connection(
    host: str, port: int, request: bytes, stop_at: float, latencies: list[float], statuses: Counter[str]
) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while time.perf_counter() < stop_at:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            assert reader is not None
            start = time.perf_counter()
            writer.write(request)
            status, close = await read_response(reader)
            latencies.append(time.perf_counter() - start)
            statuses[str(status)] += 1
            if close:
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError):
            statuses["socket_error"] += 1
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


async def run_connections(
    url: str, request_args: tuple[bytes, str], connections: int, seconds: float
) -> dict[str, Any]:
    host, port, request = build_request(url, *request_args)
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    stop_at = time.perf_counter() + seconds
    await asyncio.gather(*(connection(host, port, request, stop_at, latencies, statuses) for _ in range(connections)))
    return {"latencies": latencies, "statuses": dict(statuses)}


def worker(
    url: str, body: bytes, content_type: str, connections: int, seconds: float, start_at: float
) -> dict[str, Any]:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    time.sleep(max(0.0, start_at - time.time()))  # every process starts its clock together
    return asyncio.run(run_connections(url, (body, content_type), connections, seconds))


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, round(q / 100 * (len(sorted_values) - 1)))]


def load(
    url: str, body: bytes, content_type: str, connections: int, seconds: float, processes: int = 1
) -> dict[str, Any]:
    """Run the load and summarise it: answers a second (any status), latency percentiles in ms, statuses."""
    processes = max(1, min(processes, connections))
    shares = [connections // processes + (1 if i < connections % processes else 0) for i in range(processes)]
    start_at = time.time() + 0.5 + 0.2 * processes
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        parts = pool.starmap(worker, [(url, body, content_type, share, seconds, start_at) for share in shares])
    latencies = sorted(latency for part in parts for latency in part["latencies"])
    statuses: Counter[str] = Counter()
    for part in parts:
        statuses.update(part["statuses"])
    answered = len(latencies)
    ok = statuses.get("200", 0)
    return {
        "connections": connections,
        "processes": processes,
        "seconds": seconds,
        "requests": answered,
        "requests_per_s": answered / seconds,
        "ok": ok,
        "errors": sum(statuses.values()) - ok,
        "statuses": dict(statuses),
        "p50_ms": 1000 * percentile(latencies, 50),
        "p99_ms": 1000 * percentile(latencies, 99),
        "mean_ms": 1000 * statistics.fmean(latencies) if latencies else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--body", type=Path, required=True, help="file whose bytes are each request's body")
    parser.add_argument("--content-type", required=True)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--processes", type=int, default=1, help="client processes sharing the connections")
    args = parser.parse_args()
    result = load(args.url, args.body.read_bytes(), args.content_type, args.connections, args.seconds, args.processes)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
