"""Which tracks run, with what share of traffic, and how requests reach them: pure,
from the spec, the resolved versions and the rollout's status.

    plan(spec, stable, canary, mirror, rollout) -> Plan

- stable always runs, at full size: it takes back all traffic the moment a canary
  fails, and weights change faster than pods start.
- canary runs while its rollout is Progressing or Paused, sized to its weight.
  Promoted, its version is what the stable track serves until the user's spec names
  it there too (the GitOps contract: the operator never edits spec); the canary takes
  all traffic until the stable track runs that version Ready, then goes. Rolled
  back, it does not run, and header routes to it fall back to the weights.
- mirror runs while spec.mirror is set, sized to its percent.

Mode router runs the router only while there is something to split; otherwise the
entry Service selects the stable track's pods directly, and costs no hop.
Mode replicas has no router: one Service selects both tracks, and the weight is
the tracks' replica counts (stable shrinks as the canary grows).
Mode gatewayAPI has no router either: an HTTPRoute carries the weights, the header
routes and the mirror to the Gateway's implementation.
"""

from dataclasses import dataclass, field
from typing import Any

from mlops_contract.routing import Backend, HeaderRoute, RoutingTable

from mlops_operator.api.modeldeployment import CanaryStatus, ModelDeploymentSpec
from mlops_operator.builders import Owner, ResolvedVersion, child_name, entry_name, plain_metadata

RUNNING = ("Progressing", "Paused")


@dataclass(frozen=True)
class Plan:
    tracks: dict[str, tuple[ResolvedVersion, int]]
    """Track -> (the version it runs, its share of traffic in percent, for its size)."""
    canary_weight: int = 0
    mirror_percent: int = 0
    header_routes: tuple[HeaderRoute, ...] = field(default=())
    router: bool = False
    """Whether the router runs (mode router, with more than one way to route)."""


def plan(
    spec: ModelDeploymentSpec,
    stable: ResolvedVersion,
    canary: ResolvedVersion | None,
    mirror: ResolvedVersion | None,
    rollout: CanaryStatus | None,
    *,
    handed_over: bool = True,
) -> Plan:
    """`handed_over`: whether the stable track already runs a promoted canary's
    version, Ready."""
    tracks = {"stable": (stable, 100)}
    weight = 0
    if canary is not None and rollout is not None:
        if rollout.phase == "Promoted":
            tracks["stable"] = (canary, 100)
            if not handed_over:
                weight = 100
                tracks["canary"] = (canary, 100)
        elif rollout.phase in RUNNING:
            weight = rollout.weight
            tracks["canary"] = (canary, weight)
    percent = 0
    if mirror is not None and spec.mirror is not None:
        percent = spec.mirror.percent
        tracks["mirror"] = (mirror, percent)
    if spec.traffic.mode == "replicas" and "canary" in tracks:
        tracks["stable"] = (tracks["stable"][0], 100 - weight)
    routes = tuple(
        HeaderRoute(r.header.lower(), r.value, r.track)
        for r in spec.traffic.header_routes
        if r.track in tracks
    )
    router = spec.traffic.mode == "router" and (len(tracks) > 1 or bool(routes))
    return Plan(tracks, weight, percent, routes, router)


def running_tracks(spec: ModelDeploymentSpec, rollout: CanaryStatus | None) -> set[str]:
    """The tracks that `plan` may run, from the spec and the recorded rollout alone (a
    promoted canary, until the stable track has taken over)."""
    running = {"stable"}
    if spec.canary is not None and rollout is not None and rollout.phase != "RolledBack":
        running.add("canary")
    if spec.mirror is not None:
        running.add("mirror")
    return running


def routing_table(
    owner: str, spec: ModelDeploymentSpec, planned: Plan, addresses: dict[str, str]
) -> RoutingTable:
    """The router's table: the plan's weights and routes, and each track's Service with
    its ClusterIP (`addresses`, by track) as the way in before endpoints are known."""
    return RoutingTable(
        canary_weight=planned.canary_weight,
        header_routes=planned.header_routes,
        sticky_key=spec.traffic.sticky_key.lower() if spec.traffic.sticky_key else None,
        mirror_percent=planned.mirror_percent,
        backends={
            track: Backend(child_name(owner, track), f"http://{addresses[track]}:80")
            for track in planned.tracks
            if track in addresses
        },
    )


def http_route(owner: Owner, spec: ModelDeploymentSpec, planned: Plan) -> dict[str, Any]:
    """Mode gatewayAPI: an HTTPRoute (gateway.networking.k8s.io/v1) on spec.traffic.gateway
    with the plan's weights over the tracks' Services, a rule per header route before
    them, and the mirror as a RequestMirror filter."""
    assert spec.traffic.gateway is not None  # noqa: S101 - the CRD requires it in this mode
    gateway = spec.traffic.gateway

    def backend(track: str, weight: int | None = None) -> dict[str, Any]:
        ref: dict[str, Any] = {"name": child_name(owner.name, track), "port": 80}
        return ref if weight is None else {**ref, "weight": weight}

    split = [backend("stable", 100 - planned.canary_weight)]
    if "canary" in planned.tracks:
        split.append(backend("canary", planned.canary_weight))
    default: dict[str, Any] = {"backendRefs": split}
    if "mirror" in planned.tracks:
        default["filters"] = [
            {
                "type": "RequestMirror",
                "requestMirror": {
                    "backendRef": backend("mirror"),
                    "percent": planned.mirror_percent,
                },
            }
        ]
    routes = [
        {
            "matches": [{"headers": [{"type": "Exact", "name": r.header, "value": r.value}]}],
            "backendRefs": [backend(r.track)],
        }
        for r in planned.header_routes
    ]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": plain_metadata(owner, entry_name(owner), "route"),
        "spec": {
            "parentRefs": [
                {
                    "group": "gateway.networking.k8s.io",
                    "kind": "Gateway",
                    "name": gateway.name,
                    "namespace": gateway.namespace or owner.namespace,
                }
            ],
            "rules": [*routes, default],
        },
    }
