"""The operator's in-memory state, as tables: who changed a child, which children are
stale, which changes were handled, the version index, the status queue and the
latest bodies. Each forgets what was deleted."""

from typing import Any

import pytest

from mlops_operator import caches, kube, statusqueue
from mlops_operator.constants import FIELD_MANAGER

Object = dict[str, Any]


def entry(manager: str, time: str, subresource: str | None = None) -> Object:
    found: Object = {"manager": manager, "time": time, "operation": "Apply"}
    if subresource:
        found["subresource"] = subresource
    return found


@pytest.mark.parametrize(
    ("entries", "changed"),
    [
        pytest.param([], True, id="never applied by us"),
        pytest.param([entry(FIELD_MANAGER, "T10")], False, id="only ours"),
        pytest.param(
            [entry("kubectl-edit", "T05"), entry(FIELD_MANAGER, "T10")],
            False,
            id="an edit before our last apply",
        ),
        pytest.param(
            [entry(FIELD_MANAGER, "T10"), entry("kubectl-edit", "T10")],
            True,
            id="an edit in the same second as our apply",
        ),
        pytest.param(
            [entry(FIELD_MANAGER, "T10"), entry("kubectl-edit", "T12")],
            True,
            id="an edit after our apply",
        ),
        pytest.param(
            [entry(FIELD_MANAGER, "T10"), entry("kube-controller-manager", "T12")],
            False,
            id="a built-in controller after our apply",
        ),
        pytest.param(
            [entry(FIELD_MANAGER, "T10"), entry("kubectl", "T12", subresource="scale")],
            False,
            id="a scale subresource write",
        ),
        pytest.param(
            [entry(FIELD_MANAGER, "T08"), entry(FIELD_MANAGER, "T10"), entry("hpa", "T09")],
            False,
            id="our latest apply counts",
        ),
    ],
)
def test_changed_by_others(entries: list[Object], changed: bool) -> None:
    assert kube.changed_by_others({"metadata": {"managedFields": entries}}) is changed


def listed(*names: tuple[str, str]) -> list[Object]:
    return [{"kind": kind, "metadata": {"name": name}} for kind, name in names]


def test_the_ledger_lists_an_owner_once_and_forgets_it() -> None:
    calls: list[tuple[str, str]] = []

    def children(namespace: str, owner: str) -> list[Object]:
        calls.append((namespace, owner))
        return listed(("Deployment", "iris-stable"), ("Deployment", "iris-canary"))

    ledger = caches.ChildLedger(children)
    stable = {("Deployment", "iris-stable")}
    # A new owner has no leftovers: nothing is listed.
    assert ledger.stale("ns", "new", stable, fresh=True) == set()
    assert calls == []
    # An owner seen first after a restart is listed once; its leftovers are stale.
    assert ledger.stale("ns", "iris", stable, fresh=False) == {("Deployment", "iris-canary")}
    assert ledger.stale("ns", "iris", stable | {("Service", "iris")}, fresh=False) == set()
    assert ledger.stale("ns", "iris", {("Service", "iris")}, fresh=False) == stable
    assert calls == [("ns", "iris")]
    ledger.forget("ns", "iris")
    ledger.stale("ns", "iris", stable, fresh=False)
    assert calls == [("ns", "iris"), ("ns", "iris")]


def test_the_change_filter_remembers_by_uid_until_forgotten() -> None:
    changes = caches.ChangeFilter()
    body = {"metadata": {"uid": "u-1"}}
    assert not changes.seen(body, ("spec", 1))
    changes.handled(body, ("spec", 1))
    assert changes.seen(body, ("spec", 1))
    assert not changes.seen(body, ("spec", 2))
    assert not changes.seen({"metadata": {"uid": "u-2"}}, ("spec", 1))
    changes.forget(body)
    assert not changes.seen(body, ("spec", 1))


def model_version(name: str, model: str, namespace: str = "ns") -> Object:
    return {"metadata": {"namespace": namespace, "name": name}, "spec": {"model": model}}


def test_the_version_index_follows_renames_and_deletions() -> None:
    index = caches.VersionIndex()
    index.update(model_version("iris-1", "iris"), deleted=False)
    index.update(model_version("iris-2", "iris"), deleted=False)
    index.update(model_version("iris-1", "iris", namespace="other"), deleted=False)
    assert sorted(v["metadata"]["name"] for v in index.get("ns", "iris")) == ["iris-1", "iris-2"]
    # A version whose spec.model changes moves to the other model.
    index.update(model_version("iris-2", "wine"), deleted=False)
    assert [v["metadata"]["name"] for v in index.get("ns", "iris")] == ["iris-1"]
    assert index.named("ns", "iris-2") == model_version("iris-2", "wine")
    for name, model in (("iris-1", "iris"), ("iris-2", "wine")):
        index.update(model_version(name, model), deleted=True)
    assert index.get("ns", "iris") == []
    assert index.named("ns", "iris-1") is None
    assert len(index.get("other", "iris")) == 1
    # Nothing is kept for the deleted ones, not even an empty entry per model.
    assert set(index._versions) == {("other", "iris")}


def test_the_status_queue_keeps_the_newest_state_per_track() -> None:
    queue: statusqueue.StatusQueue[str] = statusqueue.StatusQueue()
    assert queue.take(timeout=0.01, linger=0) == {}
    queue.submit("ns", "iris", "stable", {"ready": 0}, resolved="iris-1")
    queue.submit("ns", "iris", "stable", {"ready": 1})  # keeps what was resolved
    queue.submit("ns", "iris", "canary", {"ready": 0}, resolved="iris-2")
    queue.submit("ns", "wine", "stable", {"ready": 2}, resolved="wine-1")
    assert queue.take(timeout=1, linger=0) == {
        ("ns", "iris"): {"stable": ({"ready": 1}, "iris-1"), "canary": ({"ready": 0}, "iris-2")},
        ("ns", "wine"): {"stable": ({"ready": 2}, "wine-1")},
    }
    assert queue.take(timeout=0.01, linger=0) == {}  # taken means gone


def test_latest_prefers_the_watch_and_forgets_deletions() -> None:
    latest = caches.Latest()

    def body(generation: int) -> Object:
        return {"metadata": {"namespace": "ns", "name": "iris", "generation": generation}}

    latest.offer(body(1))
    assert latest.get("ns", "iris") == body(1)
    latest.update(body(2), deleted=False)
    latest.offer(body(1))  # an older read does not replace what the watch delivered
    assert latest.get("ns", "iris") == body(2)
    latest.update(body(2), deleted=True)
    assert latest.get("ns", "iris") is None
