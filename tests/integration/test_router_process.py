"""`mlops-serve router` as a real process on loopback, in front of real HTTP backends
that say which track they are: the split, header and sticky routes, the mirror that
never delays a caller, the table's fallback file, and bad input."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from mlops_contract.routing import Backend, HeaderRoute, RoutingTable, render

from .kube import wait_until
from .processes import free_port, metric

ROUTER = [sys.executable, "-m", "mlops_serving.serve", "router"]


@dataclass
class Track:
    """A backend that answers with its name, after `delay` seconds, and keeps what it got."""

    name: str
    delay: float = 0.0
    bodies: list[bytes] = field(default_factory=list)
    cookies: list[str | None] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def serve(track: Track) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Headers and body go out in two writes: without this, Nagle's algorithm
            # and delayed ACKs hold every answer back by 40 ms.
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            time.sleep(track.delay)
            track.bodies.append(body)
            track.cookies.append(self.headers.get("Cookie"))
            reply = json.dumps({"track": track.name, "path": self.path}).encode()
            self.send_response(200)
            self.send_header("Set-Cookie", f"session={len(track.bodies)}")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    track.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=track.server.serve_forever, daemon=True).start()


@pytest.fixture
def tracks() -> Iterator[dict[str, Track]]:
    made = {name: Track(name) for name in ("stable", "canary", "mirror")}
    for track in made.values():
        serve(track)
    yield made
    for track in made.values():
        assert track.server is not None
        track.server.shutdown()


def table_of(tracks: dict[str, Track], **fields: Any) -> str:
    backends = {name: Backend(f"iris-{name}", t.url) for name, t in tracks.items()}
    return render(RoutingTable(backends=backends, **fields))


@dataclass
class Router:
    url: str
    table: Path
    process: "subprocess.Popen[str]"

    def write(self, text: str) -> None:
        self.table.write_text(text)

    def post(self, body: bytes = b"{}", headers: dict[str, str] | None = None) -> Any:
        connection = http.client.HTTPConnection(self.url.removeprefix("http://"), timeout=10)
        try:
            connection.request("POST", "/predict", body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.getheader("x-mlops-track"), response.read()
        finally:
            connection.close()

    def get(self, path: str) -> str:
        connection = http.client.HTTPConnection(self.url.removeprefix("http://"), timeout=10)
        try:
            connection.request("GET", path)
            return connection.getresponse().read().decode()
        finally:
            connection.close()


@pytest.fixture
def router(tracks: dict[str, Track], tmp_path: Path) -> Iterator[Router]:
    port = free_port()
    table = tmp_path / "table.json"
    table.write_text(table_of(tracks))
    env = {
        **os.environ,
        "MLOPS_ROUTER_HOST": "127.0.0.1",
        "MLOPS_ROUTER_PORT": str(port),
        "MLOPS_ROUTER_TABLE_FILE": str(table),
        "MLOPS_ROUTER_FILE_POLL_SECONDS": "0.1",
        "MLOPS_ROUTER_MAX_BODY_BYTES": "4096",
    }
    env.pop("KUBERNETES_SERVICE_HOST", None)
    process = subprocess.Popen(
        ROUTER, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    made = Router(f"http://127.0.0.1:{port}", table, process)

    def ready() -> bool:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        try:
            return '"ready": true' in made.get("/router/ready")
        except OSError:
            return False

    try:
        wait_until(ready, "the router to become ready", timeout=30)
        yield made
    finally:
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
        assert process.stdout is not None
        assert "Finished server process" in process.stdout.read()


def split(router: Router, requests: int) -> Counter[str]:
    """Tracks that answered, over one keep-alive connection (as a pooled client sends)."""
    connection = http.client.HTTPConnection(router.url.removeprefix("http://"), timeout=10)
    answered: Counter[str] = Counter()
    for _ in range(requests):
        connection.request("POST", "/predict", body=b"{}")
        response = connection.getresponse()
        answer = json.loads(response.read())
        assert response.getheader("x-mlops-track") == answer["track"]
        answered[answer["track"]] += 1
    connection.close()
    return answered


def test_one_keep_alive_connection_is_split_by_weight_and_follows_the_table(
    router: Router, tracks: dict[str, Track]
) -> None:
    assert split(router, 200) == {"stable": 200}
    router.write(table_of(tracks, canary_weight=30))
    wait_until(lambda: '"canaryWeight": 30' in router.get("/router/table"), "the new table")
    answered = split(router, 2000)
    # 2,000 draws at 30 %: three standard deviations are 3.1 points.
    assert abs(100 * answered["canary"] / 2000 - 30) < 3.1, answered
    router.write(table_of(tracks, canary_weight=100))
    wait_until(lambda: '"canaryWeight": 100' in router.get("/router/table"), "the new table")
    assert split(router, 200) == {"canary": 200}
    text = router.get("/metrics")
    assert metric(text, "mlops_router_requests_total", track="canary", code="200") == (
        answered["canary"] + 200
    )
    assert metric(text, "mlops_router_canary_weight") == 100


def test_header_route_reaches_the_canary_at_weight_zero_and_sticky_callers_stay(
    router: Router, tracks: dict[str, Track]
) -> None:
    router.write(
        table_of(
            tracks,
            canary_weight=50,
            header_routes=(HeaderRoute("x-model-version", "2", "canary"),),
            sticky_key="x-user",
        )
    )
    wait_until(lambda: '"canaryWeight": 50' in router.get("/router/table"), "the new table")
    for user in ("ann", "bob", "cid", "dee"):
        seen = {router.post(headers={"X-User": user})[1] for _ in range(10)}
        assert len(seen) == 1, (user, seen)
    router.write(table_of(tracks, header_routes=(HeaderRoute("x-model-version", "2", "canary"),)))
    wait_until(lambda: '"canaryWeight": 0' in router.get("/router/table"), "the new table")
    assert {router.post(headers={"X-Model-Version": "2"})[1] for _ in range(20)} == {"canary"}
    assert {router.post(headers={"X-Model-Version": "1"})[1] for _ in range(20)} == {"stable"}


def test_the_mirror_gets_its_copies_and_never_delays_the_caller(
    router: Router, tracks: dict[str, Track]
) -> None:
    tracks["mirror"].delay = 2.0
    router.write(table_of(tracks, mirror_percent=100))
    wait_until(lambda: '"mirrorPercent": 100' in router.get("/router/table"), "the new table")
    slowest = 0.0
    for i in range(20):
        started = time.perf_counter()
        status, track, body = router.post(body=json.dumps({"row": i}).encode())
        slowest = max(slowest, time.perf_counter() - started)
        assert (status, track, json.loads(body)["track"]) == (200, "stable", "stable")
    # Had the router waited for the mirror, every request would have taken 2 s.
    assert slowest < 1.0, slowest
    wait_until(lambda: len(tracks["mirror"].bodies) == 20, "the mirror's 20 copies", timeout=30)
    assert sorted(tracks["mirror"].bodies) == sorted(tracks["stable"].bodies)
    text = router.get("/metrics")
    assert metric(text, "mlops_router_mirror_requests_total", outcome="sent") == 20


def test_bad_tables_bodies_and_backends_get_clear_answers(
    router: Router, tracks: dict[str, Track]
) -> None:
    router.write('{"canaryWeight": 130, "backends": {}}')
    wait_until(
        lambda: metric(router.get("/metrics"), "mlops_router_table_errors_total") == 1,
        "the bad table to be refused",
    )
    assert split(router, 20) == {"stable": 20}  # the old table stays in force
    status, _, body = router.post(body=b"x" * 5000)
    assert status == 413
    assert "4096" in json.loads(body)["error"]
    down = Track("canary")
    serve(down)
    assert down.server is not None
    gone = down.url
    down.server.shutdown()
    down.server.server_close()
    router.write(
        render(
            RoutingTable(
                canary_weight=100,
                backends={
                    "stable": Backend("iris-stable", tracks["stable"].url),
                    "canary": Backend("iris-canary", gone),
                },
            )
        )
    )
    wait_until(lambda: '"canaryWeight": 100' in router.get("/router/table"), "the new table")
    status, track, body = router.post()
    assert (status, track) == (502, "canary")
    assert "could not be reached" in json.loads(body)["error"]
    assert router.process.poll() is None


def test_a_cookie_one_caller_got_never_reaches_another(
    router: Router, tracks: dict[str, Track]
) -> None:
    # By a name, not an address: cookie jars keep no cookies for bare IP addresses.
    by_name = Backend("iris-stable", tracks["stable"].url.replace("127.0.0.1", "localhost"))
    table = RoutingTable(canary_weight=1, backends={"stable": by_name, "canary": by_name})
    router.write(render(table))
    wait_until(lambda: '"canaryWeight": 1' in router.get("/router/table"), "the new table")
    first = router.post()
    second = router.post(headers={"Cookie": "session=mine"})
    third = router.post()
    assert [answer[0] for answer in (first, second, third)] == [200, 200, 200]
    # The backend set a cookie on every answer; the router passed on only what each
    # caller sent itself.
    assert tracks["stable"].cookies == [None, "session=mine", None]
