"""`mlops-serve router`: one ModelDeployment's single entry point, splitting requests
between its tracks by exact weights, with no mesh.

Each request is placed on a track by `routing.choose_track` (header routes, then a
sticky key, then the weights) and sent to one of that track's ready pods, the one
with fewer requests in flight of two picked at random. A share of requests is also
copied to the mirror track, fire and forget: the caller never waits for the mirror,
never sees its answer or its errors, and mirror copies beyond a bound are dropped.

Pods are found the way Envoy reads EDS: from the tracks' EndpointSlices, watched on
the API server, so that a keep-alive connection from a caller is split by weight
too (a Service balances per connection). The routing table comes from the
operator's ConfigMap, also watched, so that a weight change reaches the router
within a second; the same ConfigMap mounted as a file is read when the API cannot
be. With neither endpoints nor API, a track is reached through its Service's URL.

The router answers /metrics and /router/* itself and proxies every other path.
"""

import asyncio
import json
import logging
import random
import ssl
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import uvicorn
from mlops_contract.routing import (
    TABLE_KEY,
    RoutingTable,
    TableError,
    choose_track,
    mirrored,
    parse,
)
from mlops_contract.settings import RouterSettings
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import ValidationError

from .metrics import LATENCY_BUCKETS
from .upstream import Headers, Upstream, UpstreamError, UpstreamTimeoutError

log = logging.getLogger("mlops_serving.router")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)
"""Headers that belong to one connection (or that the router sets itself)."""
TRACKS = ("stable", "canary", "mirror")
UNREACHED = (502, 504)
"""The statuses the router answers itself when a track cannot be reached in time."""


class RouterMetrics:
    """Requests, errors and latency by track, as the router saw them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "mlops_router_requests",
            "Requests routed, by track and status code",
            ["track", "code"],
            registry=self.registry,
        )
        latency = Histogram(
            "mlops_router_request_duration_seconds",
            "Latency of routed requests, by track, as the caller saw it",
            ["track"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.latency = {track: latency.labels(track) for track in TRACKS}
        self.mirror = Counter(
            "mlops_router_mirror_requests",
            "Copies sent to the mirror track: sent, dropped (bound reached) or failed",
            ["outcome"],
            registry=self.registry,
        )
        self.weight = Gauge(
            "mlops_router_canary_weight",
            "Percent of requests the table in force gives the canary",
            registry=self.registry,
        )
        self.endpoints = Gauge(
            "mlops_router_endpoints",
            "Ready endpoints known per track",
            ["track"],
            registry=self.registry,
        )
        self.table_errors = Counter(
            "mlops_router_table_errors",
            "Routing tables refused (the previous one stays in force)",
            registry=self.registry,
        )


class Endpoints:
    """Ready pod addresses per Service, from EndpointSlices (several per Service)."""

    def __init__(self) -> None:
        self._slices: dict[str, tuple[str, list[str]]] = {}
        self.by_service: dict[str, list[str]] = {}

    def reset(self, slices: list[dict[str, Any]]) -> None:
        self._slices = {}
        for item in slices:
            self._put(item)
        self._index()

    def update(self, kind: str, item: dict[str, Any]) -> None:
        if kind == "DELETED":
            self._slices.pop(item["metadata"]["name"], None)
        else:
            self._put(item)
        self._index()

    def _put(self, item: dict[str, Any]) -> None:
        meta = item.get("metadata", {})
        service = meta.get("labels", {}).get("kubernetes.io/service-name")
        if not service:
            return
        ports = item.get("ports") or []
        port = next((p.get("port") for p in ports if p.get("name") == "http"), None)
        port = port or (ports[0].get("port") if ports else None)
        addresses = [
            f"http://{_host(endpoint['addresses'][0])}:{port}"
            for endpoint in item.get("endpoints") or []
            if port
            and endpoint.get("addresses")
            and (endpoint.get("conditions") or {}).get("ready") is not False
        ]
        self._slices[meta["name"]] = (service, addresses)

    def _index(self) -> None:
        merged: dict[str, list[str]] = {}
        for service, addresses in self._slices.values():
            merged.setdefault(service, []).extend(addresses)
        self.by_service = merged


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


class Router:
    """The routing state and the ASGI app that acts on it."""

    def __init__(self, settings: RouterSettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.rng = rng or random.Random()  # noqa: S311 - spreading load, not secrecy
        self.table: RoutingTable | None = None
        self.from_api = False
        self.endpoints = Endpoints()
        self.in_flight: dict[str, int] = {}
        self.metrics = RouterMetrics()
        self._mirrors: set[asyncio.Task[None]] = set()
        self.upstream = Upstream()
        self._tasks: list[asyncio.Task[None]] = []
        self._file_text: str | None = None

    def apply(self, text: str, source: str) -> bool:
        """Put a table in force; a table that cannot be used leaves the old one."""
        try:
            table = parse(text)
        except TableError as error:
            self.metrics.table_errors.inc()
            log.error("routing table from %s refused: %s", source, error)
            return False
        if table != self.table:
            log.info(
                "routing table from %s: canary %d%%, mirror %d%%, tracks %s",
                source,
                table.canary_weight,
                table.mirror_percent,
                ", ".join(sorted(table.backends)),
            )
        self.table = table
        self.metrics.weight.set(table.canary_weight)
        self._count_endpoints()
        return True

    def pick(self, track: str) -> str | None:
        """A base URL for the track: of two ready pods, the one with fewer requests in
        flight; the Service's URL while no pods are known."""
        backend = self.table.backends.get(track) if self.table else None
        if backend is None:
            return None
        pods = self.endpoints.by_service.get(backend.service)
        if not pods:
            return backend.url
        if len(pods) == 1:
            return pods[0]
        first, second = self.rng.sample(pods, 2)
        return first if self.in_flight.get(first, 0) <= self.in_flight.get(second, 0) else second

    def _count_endpoints(self) -> None:
        if self.table is None:
            return
        for track, backend in self.table.backends.items():
            self.metrics.endpoints.labels(track).set(
                len(self.endpoints.by_service.get(backend.service, []))
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/metrics":
            await _answer(send, 200, generate_latest(self.metrics.registry), "text/plain")
        elif path == "/router/ready":
            ready = self.table is not None and "stable" in self.table.backends
            await _json(send, 200 if ready else 503, {"ready": ready})
        elif path == "/router/table":
            await _json(send, 200, self._describe())
        else:
            await self._proxy(scope, receive, send)

    def _describe(self) -> dict[str, Any]:
        table = self.table
        return {
            "source": "api" if self.from_api else "file",
            "canaryWeight": table.canary_weight if table else None,
            "mirrorPercent": table.mirror_percent if table else None,
            "endpoints": {
                track: self.endpoints.by_service.get(backend.service, [])
                for track, backend in (table.backends.items() if table else ())
            },
        }

    async def _proxy(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        body = await _read_body(receive, self.settings.max_body_bytes)
        if body is None:
            await _json(send, 413, {"error": f"body over {self.settings.max_body_bytes} bytes"})
            return
        headers = [(name, value) for name, value in scope["headers"] if name not in HOP_BY_HOP]
        table = self.table
        if table is None:
            await _json(send, 503, {"error": "no routing table yet"})
            return
        named = (
            {name.decode("latin-1"): value.decode("latin-1") for name, value in headers}
            if table.header_routes or table.sticky_key
            else {}
        )
        track = choose_track(table, named, self.rng)
        base = self.pick(track)
        if base is None:
            await _json(send, 503, {"error": f"track {track} has no backend in the table"})
            return
        target = scope["raw_path"].decode("latin-1") if scope.get("raw_path") else scope["path"]
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        if table.mirror_percent and "mirror" in table.backends and mirrored(table, self.rng):
            self._mirror(scope["method"], target, headers, body)
        status, reply_headers, content = await self._send(
            scope["method"], base, target, headers, body, timeout=self.settings.timeout_seconds
        )
        reply_headers += [
            (b"content-length", str(len(content)).encode()),
            (b"x-mlops-track", track.encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": reply_headers})
        await send({"type": "http.response.body", "body": content})
        self.metrics.requests.labels(track, str(status)).inc()
        self.metrics.latency[track].observe(time.perf_counter() - started)

    async def _send(
        self,
        method: str,
        base: str,
        target: str,
        headers: Headers,
        body: bytes,
        *,
        timeout: float,
    ) -> tuple[int, Headers, bytes]:
        self.in_flight[base] = self.in_flight.get(base, 0) + 1
        try:
            status, reply, content = await self.upstream.request(
                method, base, target, headers, body, timeout=timeout
            )
        except UpstreamTimeoutError:
            return _error(504, f"the track did not answer within {timeout:g}s")
        except UpstreamError as error:
            return _error(502, f"the track could not be reached: {error}")
        finally:
            self.in_flight[base] -= 1
        return status, [(k, v) for k, v in reply if k.lower() not in HOP_BY_HOP], content

    def _mirror(self, method: str, target: str, headers: Headers, body: bytes) -> None:
        if len(self._mirrors) >= self.settings.mirror_in_flight:
            self.metrics.mirror.labels("dropped").inc()
            return
        task = asyncio.get_running_loop().create_task(
            self._mirror_one(method, target, headers, body)
        )
        self._mirrors.add(task)
        task.add_done_callback(self._mirrors.discard)

    async def _mirror_one(self, method: str, target: str, headers: Headers, body: bytes) -> None:
        base = self.pick("mirror")
        if base is None:
            return
        status, _, _ = await self._send(
            method, base, target, headers, body, timeout=self.settings.mirror_timeout_seconds
        )
        self.metrics.mirror.labels("failed" if status in UNREACHED else "sent").inc()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def start(self) -> None:
        self._read_file()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._poll_file()))
        api = Api.in_cluster(self.settings)
        if api is not None and self.settings.namespace and self.settings.configmap:
            self._tasks += [
                loop.create_task(
                    api.watch(self._configmaps_path(), self._on_configmaps, self._on_configmap)
                ),
                loop.create_task(api.watch(self._slices_path(), self._on_slices, self._on_slice)),
            ]

    async def stop(self) -> None:
        for task in [*self._tasks, *self._mirrors]:
            task.cancel()
        self.upstream.close()

    def _configmaps_path(self) -> str:
        return (
            f"/api/v1/namespaces/{self.settings.namespace}/configmaps"
            f"?fieldSelector=metadata.name%3D{self.settings.configmap}"
        )

    def _slices_path(self) -> str:
        return f"/apis/discovery.k8s.io/v1/namespaces/{self.settings.namespace}/endpointslices"

    def _on_configmaps(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            self._on_configmap("ADDED", item)

    def _on_configmap(self, kind: str, item: dict[str, Any]) -> None:
        # A deleted ConfigMap leaves the last table in force: the owner is going away.
        text = (item.get("data") or {}).get(TABLE_KEY)
        if kind != "DELETED" and text is not None and self.apply(text, "the API"):
            self.from_api = True

    def _on_slices(self, items: list[dict[str, Any]]) -> None:
        self.endpoints.reset(items)
        self._count_endpoints()

    def _on_slice(self, kind: str, item: dict[str, Any]) -> None:
        self.endpoints.update(kind, item)
        self._count_endpoints()

    def _read_file(self) -> None:
        try:
            text = self.settings.table_file.read_text()
        except OSError:
            return
        if text != self._file_text:
            self._file_text = text
            self.apply(text, str(self.settings.table_file))

    async def _poll_file(self) -> None:
        while not self.from_api:
            await asyncio.sleep(self.settings.file_poll_seconds)
            if not self.from_api:
                self._read_file()


class Api:
    """Just enough of the Kubernetes API for two watches, with the pod's own token."""

    def __init__(self, url: str, token_file: Path, context: ssl.SSLContext | None) -> None:
        self.url = url.rstrip("/")
        self.token_file = token_file
        self.context = context

    @classmethod
    def in_cluster(cls, settings: RouterSettings) -> "Api | None":
        url = settings.api_url
        host, port = settings.kubernetes_service_host, settings.kubernetes_service_port
        if url is None and host and port:
            url = f"https://{_host(host)}:{port}"
        token = SERVICE_ACCOUNT / "token"
        if url is None or not token.is_file():
            return None
        ca = SERVICE_ACCOUNT / "ca.crt"
        context = ssl.create_default_context(cafile=str(ca)) if ca.is_file() else None
        return cls(url, token, context)

    def _headers(self) -> dict[str, str]:
        # Read each time: the kubelet rotates projected tokens.
        return {"Authorization": f"Bearer {self.token_file.read_text().strip()}"}

    async def watch(
        self,
        path: str,
        listed: Callable[[list[dict[str, Any]]], None],
        changed: Callable[[str, dict[str, Any]], None],
    ) -> None:
        """List, then watch from the list's resourceVersion; list again after a 410 or
        any failure, with a backoff of up to 10 s."""
        delay = 0.5
        joiner = "&" if "?" in path else "?"
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    items, version = await self._list(session, path)
                    listed(items)
                    delay = 0.5
                    async for kind, item in self._events(session, path + joiner, version):
                        changed(kind, item)
                except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as error:
                    log.warning("watch %s: %s; again in %.1fs", path, error, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10)

    async def _list(
        self, session: aiohttp.ClientSession, path: str
    ) -> tuple[list[dict[str, Any]], str]:
        async with session.get(
            self.url + path, headers=self._headers(), ssl=self.context or True
        ) as response:
            response.raise_for_status()
            document = await response.json()
        return list(document.get("items", [])), str(document["metadata"]["resourceVersion"])

    async def _events(
        self, session: aiohttp.ClientSession, path: str, version: str
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        url = (
            f"{self.url}{path}watch=1&allowWatchBookmarks=true&timeoutSeconds=300"
            f"&resourceVersion={version}"
        )
        async with session.get(
            url,
            headers=self._headers(),
            ssl=self.context or True,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=330),
        ) as response:
            response.raise_for_status()
            async for line in response.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, item = event["type"], event["object"]
                if kind == "ERROR":
                    return  # 410 Gone and the like: list again
                if kind != "BOOKMARK":
                    yield kind, item


def _error(status: int, message: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return status, [(b"content-type", b"application/json")], json.dumps({"error": message}).encode()


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(send: Send, status: int, body: bytes, content_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, document: Mapping[str, Any]) -> None:
    await _answer(send, status, json.dumps(document).encode(), "application/json")


def main() -> int:
    """Serve the router (settings from MLOPS_ROUTER_* variables)."""
    try:
        settings = RouterSettings()
    except ValidationError as error:
        print(f"mlops-serve router: invalid settings:\n{error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run(
        Router(settings),
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_level=settings.log_level,
        loop="uvloop",
        http="httptools",
        lifespan="on",
    )
    return 0
