"""The router's HTTP/1.1 client to the tracks' pods: pooled keep-alive connections,
one request at a time on each, responses parsed by httptools (uvicorn's own parser).

A general client (aiohttp) builds a URL object, a request object, a response object
and a cookie jar's view per request; timed through the router, that cost about
0.2 ms of the 0.65 ms the router added to p50. The router needs none of it: its
backends are pod IPs that speak HTTP/1.1 with Content-Length or chunked bodies.
"""

import asyncio
import socket
from dataclasses import dataclass, field
from typing import cast

import httptools

Headers = list[tuple[bytes, bytes]]


class UpstreamError(Exception):
    """The backend could not be reached or answered badly; the message says how."""


class UpstreamTimeoutError(UpstreamError):
    """The backend did not answer within the timeout."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection, and the response it is waiting for."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.received = False
        """Whether any byte of the current response came."""
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._head = False
        self.status = 0
        self.headers: Headers = []
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio's classes, only behave as them.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._finish(UpstreamError(f"the connection closed{f': {exc}' if exc else ''}"))

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._finish(UpstreamError("the backend asked to switch protocols"))
        except httptools.HttpParserError as error:
            self._finish(UpstreamError(f"not an HTTP response: {error}"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if self._head:  # no body follows, whatever Content-Length says
            self.closed = True  # the parser would wait for one: not reused
            self._finish(None)

    def on_body(self, body: bytes) -> None:
        if not self._head:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if not self._parser.should_keep_alive():
            self.closed = True
        self._finish(None)

    def _finish(self, error: Exception | None) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

    async def exchange(self, request: bytes, head: bool, timeout: float) -> None:
        """Send one request and wait for its whole response."""
        assert self.transport is not None  # noqa: S101 - connected before use
        self._parser = httptools.HttpResponseParser(self)
        self._head, self.received = head, False
        self.status, self.headers, self.body = 0, [], []
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, self._expire, waiter)
        self.transport.write(request)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _expire(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_exception(UpstreamTimeoutError("no answer in time"))
            self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


@dataclass
class Upstream:
    """Idle connections per backend ("http://host:port"), reused in LIFO order."""

    connect_timeout: float = 5.0
    reconnect_pause: float = 0.1
    """The wait before the one more try that a refused connection gets."""
    idle: dict[str, list[_Connection]] = field(default_factory=dict)
    _addresses: dict[str, tuple[str, int, bytes]] = field(default_factory=dict)

    def _address(self, base: str) -> tuple[str, int, bytes]:
        found = self._addresses.get(base)
        if found is None:
            authority = base.removeprefix("http://").rstrip("/")
            host, _, port = authority.rpartition(":")
            if not host or not port.isdigit():
                raise UpstreamError(f"not an http://host:port address: {base}")
            found = self._addresses[base] = (host.strip("[]"), int(port), authority.encode())
        return found

    async def request(
        self,
        method: str,
        base: str,
        target: str,
        headers: Headers,
        body: bytes,
        *,
        timeout: float,
    ) -> tuple[int, Headers, bytes]:
        """One request to `base` (headers without Host and Content-Length, which are
        set here); its status, headers and body. A reused connection that the
        backend had closed before it answered is replaced by a new one, and a new
        connection that is refused is tried once more."""
        host, port, authority = self._address(base)
        lines = [f"{method} {target} HTTP/1.1\r\n".encode("latin-1"), b"host: ", authority]
        for name, value in headers:
            lines += [b"\r\n", name, b": ", value]
        lines.append(b"\r\ncontent-length: %d\r\n\r\n" % len(body))
        request = b"".join(lines) + body
        head = method == "HEAD"
        pool = self.idle.setdefault(base, [])
        while pool:
            connection = pool.pop()
            if connection.closed:
                continue
            try:
                return await self._exchange(pool, connection, request, head, timeout)
            except UpstreamTimeoutError:
                raise
            except UpstreamError:
                if connection.received:
                    raise
        try:
            connection = await self._connect(host, port)
        except UpstreamTimeoutError:
            raise
        except UpstreamError:
            # Nothing was sent, so any request may go once more: a Service whose
            # endpoints are changing refuses a connection for a moment.
            await asyncio.sleep(self.reconnect_pause)
            connection = await self._connect(host, port)
        return await self._exchange(pool, connection, request, head, timeout)

    async def _connect(self, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(_Connection, host, port), self.connect_timeout
            )
        except TimeoutError:
            raise UpstreamTimeoutError(f"no connection to {host}:{port} in time") from None
        except OSError as error:
            raise UpstreamError(f"cannot connect to {host}:{port}: {error}") from None
        return connection

    @staticmethod
    async def _exchange(
        pool: list[_Connection], connection: _Connection, request: bytes, head: bool, timeout: float
    ) -> tuple[int, Headers, bytes]:
        try:
            await connection.exchange(request, head, timeout)
        except BaseException:
            connection.close()
            raise
        if connection.closed:
            connection.close()
        else:
            pool.append(connection)
        return connection.status, connection.headers, b"".join(connection.body)

    def close(self) -> None:
        for pool in self.idle.values():
            for connection in pool:
                connection.close()
        self.idle.clear()
