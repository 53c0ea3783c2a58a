"""The router's decision: weights held to ±1.5 points over 10,000 requests (a fixed
seed), header routes first, sticky callers kept on their track."""

import random
import re
from collections import Counter
from typing import Any

import pytest
from mlops_contract.routing import (
    Backend,
    HeaderRoute,
    RoutingTable,
    TableError,
    choose_track,
    mirrored,
    parse,
    render,
)

from mlops_serving.router import Endpoints

REQUESTS = 10_000


@pytest.mark.parametrize("weight", [0, 1, 5, 20, 50, 80, 99, 100])
def test_weights_hold_within_one_and_a_half_points(weight: int) -> None:
    rng = random.Random(20261202)
    table = RoutingTable(canary_weight=weight)
    counts = Counter(choose_track(table, {}, rng) for _ in range(REQUESTS))
    share = 100 * counts["canary"] / REQUESTS
    assert abs(share - weight) <= 1.5, share
    if weight in (0, 100):
        assert share == weight  # never a stray request at the ends


ROUTES = (
    HeaderRoute("x-model-version", "2", "canary"),
    HeaderRoute("x-model-version", "1", "stable"),
)


@pytest.mark.parametrize(
    ("weight", "headers", "track"),
    [
        (0, {"x-model-version": "2"}, "canary"),  # reaches the canary at weight 0
        (100, {"x-model-version": "1"}, "stable"),
        (0, {"x-model-version": "3"}, "stable"),  # no route matches: by weight
        (100, {"x-model-version": "3"}, "canary"),
        (0, {"x-other": "2"}, "stable"),
    ],
)
def test_header_routes_win_over_weights(weight: int, headers: dict[str, str], track: str) -> None:
    table = RoutingTable(canary_weight=weight, header_routes=ROUTES)
    assert {choose_track(table, headers, random.Random(seed)) for seed in range(50)} == {track}


def test_a_sticky_caller_stays_on_its_track_and_callers_split_by_weight() -> None:
    rng = random.Random(7)
    table = RoutingTable(canary_weight=30, sticky_key="x-user")
    callers = [f"user-{i}" for i in range(REQUESTS)]
    placed = {c: choose_track(table, {"x-user": c}, rng) for c in callers}
    assert all(choose_track(table, {"x-user": c}, rng) == placed[c] for c in callers[:500])
    share = 100 * sum(t == "canary" for t in placed.values()) / REQUESTS
    assert abs(share - 30) <= 1.5, share
    # As the weight grows, callers only ever move to the canary, never back.
    grown = RoutingTable(canary_weight=60, sticky_key="x-user")
    moved = {c: choose_track(grown, {"x-user": c}, rng) for c in callers}
    assert all(moved[c] == "canary" for c, track in placed.items() if track == "canary")
    # Without the header, a request is placed at random.
    assert {choose_track(table, {}, random.Random(s)) for s in range(50)} == {"stable", "canary"}


@pytest.mark.parametrize("percent", [0, 10, 50, 100])
def test_mirror_share(percent: int) -> None:
    rng = random.Random(3)
    table = RoutingTable(mirror_percent=percent)
    share = 100 * sum(mirrored(table, rng) for _ in range(REQUESTS)) / REQUESTS
    assert abs(share - percent) <= 1.5, share


def test_a_table_reads_back_as_written() -> None:
    table = RoutingTable(
        canary_weight=20,
        mirror_percent=5,
        sticky_key="x-user",
        header_routes=(HeaderRoute("x-model-version", "2", "canary"),),
        backends={"stable": Backend("iris-stable", "http://10.96.0.9:80")},
    )
    assert parse(render(table)) == table


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[]", "not a JSON object"),
        ("{", "not JSON"),
        ('{"canaryWeight": 101}', "canaryWeight"),
        ('{"canaryWeight": true}', "canaryWeight"),
        ('{"mirrorPercent": -1}', "mirrorPercent"),
        ('{"stickyKey": ""}', "stickyKey"),
        ('{"headerRoutes": {}}', "headerRoutes"),
        ('{"headerRoutes": [{"header": "a", "value": "1", "track": "mirror"}]}', "[0].track"),
        ('{"headerRoutes": [{"value": "1", "track": "canary"}]}', "headerRoutes[0].header"),
        ('{"backends": {"blue": {"service": "s", "url": "http://x"}}}', "backends.blue"),
        ('{"backends": {"stable": {"url": "http://x"}}}', "backends.stable.service"),
        ('{"backends": {"stable": {"service": "s", "url": "ftp://x"}}}', "backends.stable.url"),
    ],
)
def test_a_bad_table_is_refused_naming_its_field(text: str, field: str) -> None:
    with pytest.raises(TableError, match=re.escape(field)):
        parse(text)


def endpoint_slice(
    name: str, service: str, ready: dict[str, bool | None], port: int = 8080
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
        "ports": [{"name": "http", "port": port}],
        "endpoints": [
            {"addresses": [ip], **({} if up is None else {"conditions": {"ready": up}})}
            for ip, up in ready.items()
        ],
    }


def test_endpoints_are_the_ready_addresses_of_every_slice_of_a_service() -> None:
    endpoints = Endpoints()
    endpoints.reset(
        [
            endpoint_slice("a-1", "iris-stable", {"10.245.0.5": True, "10.245.0.6": False}),
            endpoint_slice("a-2", "iris-stable", {"10.245.0.7": None}),
            endpoint_slice("b-1", "iris-canary", {"fd00::3": True}, port=9000),
        ]
    )
    assert endpoints.by_service == {
        "iris-stable": ["http://10.245.0.5:8080", "http://10.245.0.7:8080"],
        "iris-canary": ["http://[fd00::3]:9000"],
    }
    endpoints.update("MODIFIED", endpoint_slice("a-1", "iris-stable", {"10.245.0.6": True}))
    endpoints.update("DELETED", endpoint_slice("a-2", "iris-stable", {}))
    assert endpoints.by_service["iris-stable"] == ["http://10.245.0.6:8080"]
