"""The router's decision, pure: which track serves a request, and whether a copy of
it goes to the mirror. The router process (and its tests) supply the randomness.

The routing table is also the one format the operator and the router share: the
operator writes `render(...)` into the router's ConfigMap, the router reads it
back with `parse(...)`.
"""

import hashlib
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Track = Literal["stable", "canary"]
TABLE_KEY = "table.json"
"""The ConfigMap key (and mounted file name) that holds the table."""


@dataclass(frozen=True)
class HeaderRoute:
    header: str
    """Header name, lower-case."""
    value: str
    track: Track


@dataclass(frozen=True)
class Backend:
    """A track's Service: its name finds its EndpointSlices, its URL (the ClusterIP) is
    the way in while no endpoints are known."""

    service: str
    url: str


@dataclass(frozen=True)
class RoutingTable:
    canary_weight: int = 0
    """Percent of requests for the canary."""
    header_routes: tuple[HeaderRoute, ...] = ()
    sticky_key: str | None = None
    """Header (lower-case) whose value keeps a caller on one track."""
    mirror_percent: int = 0
    """Percent of requests copied to the mirror."""
    backends: Mapping[str, Backend] = field(default_factory=dict)
    """Where each track (stable, canary, mirror) is served."""


class TableError(ValueError):
    """A routing table that cannot be used; the message names the field."""


def render(table: RoutingTable) -> str:
    """The table as the ConfigMap holds it."""
    document = {
        "canaryWeight": table.canary_weight,
        "mirrorPercent": table.mirror_percent,
        "stickyKey": table.sticky_key,
        "headerRoutes": [
            {"header": r.header, "value": r.value, "track": r.track} for r in table.header_routes
        ],
        "backends": {
            track: {"service": b.service, "url": b.url} for track, b in table.backends.items()
        },
    }
    return json.dumps(document, indent=2, sort_keys=True)


def parse(text: str) -> RoutingTable:
    """A table from its JSON text; TableError names the first field that is wrong."""
    try:
        document = json.loads(text)
    except ValueError as error:
        raise TableError(f"not JSON: {error}") from None
    if not isinstance(document, dict):
        raise TableError("not a JSON object")
    return RoutingTable(
        canary_weight=_percent(document, "canaryWeight"),
        mirror_percent=_percent(document, "mirrorPercent"),
        sticky_key=_sticky(document.get("stickyKey")),
        header_routes=tuple(
            _route(i, r) for i, r in enumerate(_list(document.get("headerRoutes", [])))
        ),
        backends={
            track: _backend(track, b) for track, b in _dict(document.get("backends", {})).items()
        },
    )


def _percent(document: Mapping[str, Any], key: str) -> int:
    value = document.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100:
        raise TableError(f"{key}: {value!r} is not a whole percent from 0 to 100")
    return value


def _sticky(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and value):
        return value.lower() if value else None
    raise TableError(f"stickyKey: {value!r} is not a header name")


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TableError(f"headerRoutes: {value!r} is not a list")
    return value


def _dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TableError(f"backends: {value!r} is not an object")
    return value


def _route(index: int, value: Any) -> HeaderRoute:
    where = f"headerRoutes[{index}]"
    if not isinstance(value, dict):
        raise TableError(f"{where}: not an object")
    header, wanted, track = value.get("header"), value.get("value"), value.get("track")
    if not isinstance(header, str) or not header:
        raise TableError(f"{where}.header: {header!r} is not a header name")
    if not isinstance(wanted, str):
        raise TableError(f"{where}.value: {wanted!r} is not a string")
    if track not in ("stable", "canary"):
        raise TableError(f"{where}.track: {track!r} is not stable or canary")
    return HeaderRoute(header.lower(), wanted, track)


def _backend(track: str, value: Any) -> Backend:
    where = f"backends.{track}"
    if track not in ("stable", "canary", "mirror"):
        raise TableError(f"{where}: not a track (stable, canary, mirror)")
    if not isinstance(value, dict):
        raise TableError(f"{where}: not an object")
    service, url = value.get("service"), value.get("url")
    if not isinstance(service, str) or not service:
        raise TableError(f"{where}.service: {service!r} is not a Service name")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise TableError(f"{where}.url: {url!r} is not an http(s) URL")
    return Backend(service, url.rstrip("/"))


def choose_track(table: RoutingTable, headers: Mapping[str, str], rng: random.Random) -> Track:
    """The track that serves a request with these headers (a case-insensitive mapping,
    or one with lower-case names).

    A matching header route wins, whatever the weights. Otherwise a caller with the
    sticky header is placed by a hash of its value, so it stays on one track while
    the weight holds, and once on the canary stays there as the weight grows; any
    other request is placed at random, by weight.
    """
    for route in table.header_routes:
        if headers.get(route.header) == route.value:
            return route.track
    key = headers.get(table.sticky_key) if table.sticky_key else None
    if key:
        point = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64 * 100
    else:
        point = rng.random() * 100
    return "canary" if point < table.canary_weight else "stable"


def mirrored(table: RoutingTable, rng: random.Random) -> bool:
    """Whether to copy this request to the mirror."""
    return rng.random() * 100 < table.mirror_percent
