"""The router's HTTP/1.1 client against raw loopback servers, on asyncio's loop and
on uvloop (the router's): keep-alive reuse, chunked bodies, a backend that closed an
idle connection, timeouts, refusals, HEAD and garbage."""

import asyncio
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
import uvloop

from mlops_serving.upstream import Upstream, UpstreamError, UpstreamTimeoutError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def run(loop: str, test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(test())


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


class Backend:
    """A loopback server; counts the connections it accepted and keeps the requests."""

    def __init__(self, answer: Callable[[int, bytes], bytes | None]) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                request = await read_request(reader)
                self.requests.append(request)
                reply = self.answer(len(self.requests), request)
                if reply is None:  # close without answering
                    break
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def ok(body: bytes = b'{"ok":true}') -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


@pytest.mark.parametrize("loop", LOOPS)
def test_requests_reuse_one_keep_alive_connection(loop: str) -> None:
    backend = Backend(lambda _, __: ok())

    async def test() -> None:
        async with backend as base:
            upstream = Upstream()
            for _ in range(5):
                status, headers, body = await upstream.request(
                    "POST", base, "/predict?x=1", [(b"x-caller", b"a")], b"{}", timeout=5
                )
                assert (status, body) == (200, b'{"ok":true}')
                assert (b"content-type", b"application/json") in headers
            upstream.close()
        assert backend.connections == 1
        first = backend.requests[0]
        assert first.startswith(b"POST /predict?x=1 HTTP/1.1\r\nhost: 127.0.0.1:")
        assert b"\r\nx-caller: a\r\ncontent-length: 2\r\n\r\n{}" in first

    run(loop, test)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_chunked_answer_is_joined(loop: str) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    backend = Backend(lambda _, __: chunked)

    async def test() -> None:
        async with backend as base:
            upstream = Upstream()
            for _ in range(2):
                _, _, body = await upstream.request("GET", base, "/", [], b"", timeout=5)
                assert body == b"abcde"
        assert backend.connections == 1

    run(loop, test)


@pytest.mark.parametrize("loop", LOOPS)
def test_an_idle_connection_the_backend_closed_is_replaced(loop: str) -> None:
    # The backend closes the connection after its first answer, as a server whose
    # keep-alive timeout ran out does; the next request goes on a new one.
    closing = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    backend = Backend(lambda number, _: closing if number % 2 else None)

    async def test() -> None:
        async with backend as base:
            upstream = Upstream()
            assert (await upstream.request("GET", base, "/", [], b"", timeout=5))[0] == 200
            await asyncio.sleep(0.1)
            assert (await upstream.request("GET", base, "/", [], b"", timeout=5))[0] == 200
        assert backend.connections == 2

    run(loop, test)


@pytest.mark.parametrize("loop", LOOPS)
def test_timeouts_refusals_head_and_garbage(loop: str) -> None:
    answered = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await answered.wait()
        writer.close()

    async def test() -> None:
        upstream = Upstream()
        server = await asyncio.start_server(slow, "127.0.0.1", 0)
        base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        with pytest.raises(UpstreamTimeoutError):
            await upstream.request("GET", base, "/", [], b"", timeout=0.2)
        assert upstream.idle[base] == []  # a timed-out connection is not reused
        answered.set()
        server.close()
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            port = unused.getsockname()[1]
        with pytest.raises(UpstreamError, match="cannot connect"):
            await upstream.request("GET", f"http://127.0.0.1:{port}", "/", [], b"", timeout=1)
        # An answer to HEAD has the length of the body it does not carry.
        head = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"
        async with Backend(lambda _, __: head) as base:
            status, headers, body = await upstream.request("HEAD", base, "/", [], b"", timeout=1)
            assert (status, headers, body) == (200, [(b"content-length", b"10")], b"")
        async with Backend(lambda _, __: b"SMTP ready\r\n\r\n") as base:
            with pytest.raises(UpstreamError, match="not an HTTP response"):
                await upstream.request("GET", base, "/", [], b"", timeout=1)

    run(loop, test)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_refused_connection_is_tried_once_more_and_a_slow_one_is_not(loop: str) -> None:
    """Nothing was sent on a connection that was refused, so the request goes once more
    (a Service whose endpoints change refuses for a moment); one that timed out may
    have been slow to answer, and is not tried again."""

    class Flaky(Upstream):
        def __init__(self, failure: UpstreamError) -> None:
            super().__init__(reconnect_pause=0.0)
            self.failure = failure
            self.attempts = 0

        async def _connect(self, host: str, port: int) -> Any:
            self.attempts += 1
            if self.attempts == 1:
                raise self.failure
            return await super()._connect(host, port)

    async def test() -> None:
        async with Backend(lambda _, __: ok()) as base:
            refused = Flaky(UpstreamError("cannot connect: [Errno 111] Connection refused"))
            status, _, body = await refused.request("GET", base, "/", [], b"", timeout=1)
            assert (status, body, refused.attempts) == (200, b'{"ok":true}', 2)
            slow = Flaky(UpstreamTimeoutError("no connection in time"))
            with pytest.raises(UpstreamTimeoutError):
                await slow.request("GET", base, "/", [], b"", timeout=1)
            assert slow.attempts == 1

    run(loop, test)
