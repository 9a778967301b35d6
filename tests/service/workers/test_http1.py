"""Each response leaves the server in one send: a process killed between a response's head and its
body would leave a load balancer with a head it has passed on and no body (tests/deploy kills replicas
under load). Served here by a real uvicorn on a loopback port, with the socket transport's writes
recorded."""

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.app import create_app
from service.workers.main import uvicorn_options
from tests.images import digit_like
from tests.servers import free_port
from tests.service.apps import make_settings

Writes = list[bytes]


class Recorded:
    def __init__(self, transport: asyncio.Transport, writes: Writes):
        self._transport, self._writes = transport, writes

    def write(self, data: bytes) -> None:
        self._writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self._transport, name)


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> Writes:
    """Every write to a connection's socket by uvicorn's HTTP protocol in this process, in order."""
    recorded: Writes = []
    connection_made = HttpToolsProtocol.connection_made

    def recording(self, transport):  # type: ignore[no-untyped-def]
        return connection_made(self, Recorded(transport, recorded))

    monkeypatch.setattr(HttpToolsProtocol, "connection_made", recording)
    return recorded


def served(app: object, **options: object) -> "Iterator[str]":
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, **{**options, "host": "127.0.0.1", "port": port}))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


async def slowly() -> AsyncIterator[bytes]:
    for part in (b"first ", b"second"):
        await asyncio.sleep(0.05)
        yield part


async def echo_length(request: Request) -> Response:
    return JSONResponse({"bytes": len(await request.body())})


SMALL_APP = Starlette(
    routes=[
        Route("/head", lambda request: Response(b"x" * 10), methods=["GET", "HEAD"]),
        Route("/stream", lambda request: StreamingResponse(slowly()), methods=["GET"]),
        Route("/echo", echo_length, methods=["POST"]),
    ]
)


def service_options(tiny_artifacts: Path) -> dict[str, object]:
    return {k: v for k, v in uvicorn_options(make_settings(tiny_artifacts)).items() if k not in ("host", "port")}


def test_a_classification_leaves_in_one_write(tiny_artifacts: Path, writes: Writes) -> None:
    app = create_app(make_settings(tiny_artifacts))
    for url in served(app, **service_options(tiny_artifacts)):
        with httpx.Client(base_url=url, timeout=30) as client:
            writes.clear()
            response = client.post(
                "/classify",
                content=digit_like(1).tobytes(),
                headers={"Content-Type": "application/octet-stream"},
            )
            assert response.status_code == 200 and response.json()["predictions"]
            time.sleep(0.1)  # the loop's next turn, when a head held back alone would have gone out
    [write] = writes
    head, _, body = write.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == response.content


def test_uvicorns_own_protocol_sends_the_head_and_body_apart(tiny_artifacts: Path, writes: Writes) -> None:
    """Why the service brings its own: with uvicorn's, the head and body are two sends."""
    app = create_app(make_settings(tiny_artifacts))
    options = {**service_options(tiny_artifacts), "http": HttpToolsProtocol}
    for url in served(app, **options):
        with httpx.Client(base_url=url, timeout=30) as client:
            writes.clear()
            response = client.post(
                "/classify", content=digit_like(2).tobytes(), headers={"Content-Type": "application/octet-stream"}
            )
            assert response.status_code == 200
    assert len(writes) == 2 and writes[0].startswith(b"HTTP/1.1 200") and writes[1] == response.content


def test_a_head_without_a_body_a_streamed_body_and_100_continue_still_arrive(
    tiny_artifacts: Path, writes: Writes
) -> None:
    for url in served(SMALL_APP, **service_options(tiny_artifacts)):
        with httpx.Client(base_url=url, timeout=5) as client:
            for _ in range(3):  # on one kept-alive connection: nothing is held over to the next response
                head = client.head("/head")
                assert head.status_code == 200 and head.headers["content-length"] == "10" and head.content == b""
                streamed = client.get("/stream")
                assert streamed.status_code == 200 and streamed.content == b"first second"
        writes.clear()
        body = np.zeros(50_000, np.uint8).tobytes()
        with httpx.Client(base_url=url, timeout=5, headers={"Expect": "100-continue"}) as client:
            echoed = client.post("/echo", content=body)
        assert echoed.status_code == 200 and echoed.json() == {"bytes": len(body)}
    assert [w for w in writes if w.startswith(b"HTTP/1.1 100")]  # written apart, before the response
    [answer] = [w for w in writes if w.startswith(b"HTTP/1.1 200")]
    assert answer.endswith(b'{"bytes":50000}')
