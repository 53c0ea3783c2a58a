"""The router's decision, pure: which track serves a request, and whether a copy of
it goes to the mirror. The router process (and its tests) supply the randomness."""

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Track = Literal["stable", "canary"]


@dataclass(frozen=True)
class HeaderRoute:
    header: str
    """Header name, lower-case."""
    value: str
    track: Track


@dataclass(frozen=True)
class RoutingTable:
    canary_weight: int = 0
    """Percent of requests for the canary."""
    header_routes: tuple[HeaderRoute, ...] = ()
    sticky_key: str | None = None
    """Header (lower-case) whose value keeps a caller on one track."""
    mirror_percent: int = 0
    """Percent of requests copied to the mirror."""


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
