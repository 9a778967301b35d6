"""uvicorn's HTTP/1.1 protocol, writing each response's head and body to the socket together.

uvicorn writes a response's status line and headers in one send and its body in the next. A process
killed between the two (a crash, the OOM killer) leaves a load balancer holding a head it has already
passed on to its client, and a body that never comes: nginx cannot send such a request to another
replica, and its client gets a truncated answer. Here the head is held until the first write of the
body and both go out in one send; in a send the kernel either takes all the bytes or none, and what it
took still reaches the peer after the process dies. A head whose body is not written in the same turn
of the event loop (a HEAD request, a streamed body) goes out on the loop's next turn, so no response
waits for more than that.
"""

import asyncio
from typing import Any

from service.workers.uvicorn_internals import Cycle, CycleTransportProtocol, response_started


class HeadWithBody:
    """A response cycle's transport, holding the head back until the body's first write."""

    def __init__(self, transport: asyncio.Transport, cycle: Cycle, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._cycle = cycle
        self._loop = loop
        self._head: bytes | None = None
        self._head_seen = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head + bytes(data))
        elif response_started(self._cycle) and not self._head_seen:
            # The cycle writes its head right after marking its response started; a 100 Continue comes before.
            self._head_seen = True
            self._head = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneWriteHttpToolsProtocol(CycleTransportProtocol):
    """uvicorn's httptools protocol, its responses' heads and bodies written in one send (see the module)."""

    def cycle_transport(
        self, transport: asyncio.Transport, cycle: Cycle, loop: asyncio.AbstractEventLoop
    ) -> asyncio.Transport:
        return HeadWithBody(transport, cycle, loop)  # type: ignore[return-value]
