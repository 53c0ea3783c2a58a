"""Which tracks run, sized how, behind what: a table of specs and rollout states."""

from typing import Any

import pytest

from mlops_operator.api.modeldeployment import CanaryStatus, ModelDeploymentSpec
from mlops_operator.builders import Owner, ResolvedVersion
from mlops_operator.traffic import http_route, plan, routing_table, running_tracks

V1, V2, V3 = (
    ResolvedVersion(f"iris-{n}", "iris", str(n), f"s3://models/iris-{n}.tar.gz", f"sha256:{n:064}")
    for n in (1, 2, 3)
)


def spec(**extra: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(
        {"model": "iris", "stable": {"version": "1"}, **extra}
    )


CANARY = {"canary": {"version": "2"}}
MIRROR = {"mirror": {"version": "3", "percent": 10}}
ROUTE = {
    "traffic": {"headerRoutes": [{"header": "X-Model-Version", "value": "2", "track": "canary"}]}
}
REPLICAS = {"traffic": {"mode": "replicas"}}


def rollout(phase: str, weight: int = 0) -> CanaryStatus:
    return CanaryStatus.model_validate({"phase": phase, "weight": weight})


@pytest.mark.parametrize(
    ("extra", "canary", "mirror", "status", "tracks", "weight", "router"),
    [
        # No canary, no mirror: the stable track alone, reached without the router.
        ({}, None, None, None, {"stable": (V1, 100)}, 0, False),
        # A canary walking its steps: sized to its weight, stable stays full size.
        (
            CANARY,
            V2,
            None,
            rollout("Progressing", 20),
            {"stable": (V1, 100), "canary": (V2, 20)},
            20,
            True,
        ),
        (
            CANARY,
            V2,
            None,
            rollout("Paused", 50),
            {"stable": (V1, 100), "canary": (V2, 50)},
            50,
            True,
        ),
        # Promoted: stable serves the canary's version until the spec says so too.
        (CANARY, V2, None, rollout("Promoted", 100), {"stable": (V2, 100)}, 0, False),
        # Rolled back: the canary does not run.
        (CANARY, V2, None, rollout("RolledBack"), {"stable": (V1, 100)}, 0, False),
        # A mirror, sized to its percent, needs the router.
        (MIRROR, None, V3, None, {"stable": (V1, 100), "mirror": (V3, 10)}, 0, True),
        # Mode replicas: the weight is the replica counts, and there is no router.
        (
            {**CANARY, **REPLICAS},
            V2,
            None,
            rollout("Progressing", 30),
            {"stable": (V1, 70), "canary": (V2, 30)},
            30,
            False,
        ),
    ],
)
def test_plan(
    extra: dict[str, Any],
    canary: ResolvedVersion | None,
    mirror: ResolvedVersion | None,
    status: CanaryStatus | None,
    tracks: dict[str, tuple[ResolvedVersion, int]],
    weight: int,
    router: bool,
) -> None:
    planned = plan(spec(**extra), V1, canary, mirror, status)
    assert (planned.tracks, planned.canary_weight, planned.router) == (tracks, weight, router)
    assert running_tracks(spec(**extra), status) >= set(tracks)


def test_a_promoted_canary_takes_all_traffic_until_stable_has_taken_over() -> None:
    promoted = rollout("Promoted", 100)
    handing = plan(spec(**CANARY), V1, V2, None, promoted, handed_over=False)
    assert handing.tracks == {"stable": (V2, 100), "canary": (V2, 100)}
    assert (handing.canary_weight, handing.router) == (100, True)
    assert running_tracks(spec(**CANARY), promoted) == {"stable", "canary"}
    done = plan(spec(**CANARY), V1, V2, None, promoted, handed_over=True)
    assert (done.tracks, done.canary_weight, done.router) == ({"stable": (V2, 100)}, 0, False)


def test_header_routes_need_the_router_and_lapse_with_their_track() -> None:
    running = plan(spec(**CANARY, **ROUTE), V1, V2, None, rollout("Progressing", 0))
    assert running.router
    assert [(r.header, r.value, r.track) for r in running.header_routes] == [
        ("x-model-version", "2", "canary")
    ]
    rolled_back = plan(spec(**CANARY, **ROUTE), V1, V2, None, rollout("RolledBack"))
    assert (rolled_back.header_routes, rolled_back.router) == ((), False)


def test_the_routing_table_names_each_running_track_by_its_service_and_cluster_ip() -> None:
    given = spec(**CANARY, **MIRROR, traffic={"stickyKey": "X-User"})
    planned = plan(given, V1, V2, V3, rollout("Progressing", 20))
    table = routing_table(
        "iris",
        given,
        planned,
        {"stable": "10.96.0.10", "canary": "10.96.0.11", "mirror": "10.96.0.12"},
    )
    assert (table.canary_weight, table.mirror_percent, table.sticky_key) == (20, 10, "x-user")
    assert {t: (b.service, b.url) for t, b in table.backends.items()} == {
        "stable": ("iris-stable", "http://10.96.0.10:80"),
        "canary": ("iris-canary", "http://10.96.0.11:80"),
        "mirror": ("iris-mirror", "http://10.96.0.12:80"),
    }


def test_the_http_route_carries_weights_header_routes_and_the_mirror() -> None:
    given = spec(
        **CANARY,
        **MIRROR,
        traffic={
            "mode": "gatewayAPI",
            "gateway": {"name": "web"},
            "headerRoutes": [{"header": "X-Model-Version", "value": "2", "track": "canary"}],
        },
    )
    planned = plan(given, V1, V2, V3, rollout("Progressing", 20))
    assert not planned.router
    route = http_route(Owner("iris", "models", "uid"), given, planned)
    assert route["metadata"]["name"] == "iris"
    assert route["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "web",
            "namespace": "models",
        }
    ]
    header, default = route["spec"]["rules"]
    assert header == {
        "matches": [{"headers": [{"type": "Exact", "name": "x-model-version", "value": "2"}]}],
        "backendRefs": [{"name": "iris-canary", "port": 80}],
    }
    assert default["backendRefs"] == [
        {"name": "iris-stable", "port": 80, "weight": 80},
        {"name": "iris-canary", "port": 80, "weight": 20},
    ]
    assert default["filters"] == [
        {
            "type": "RequestMirror",
            "requestMirror": {"backendRef": {"name": "iris-mirror", "port": 80}, "percent": 10},
        }
    ]
