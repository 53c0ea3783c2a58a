"""What the operator remembers between reconciles, fed by the watches and its own
writes: per-object locks, each owner's children, the change filter, the ModelVersions
by model, and the newest body of each watched object. Every table forgets an object
once it is deleted, so none grows with every object ever seen. No API calls here:
the ledger is handed its lister."""

import threading
from collections.abc import Callable
from typing import Any

Object = dict[str, Any]


class LockTable:
    """One lock per object, so that reconciles of it from several triggers take turns."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}

    def of(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def forget(self, namespace: str, name: str) -> None:
        """Drop a deleted object's lock. A reconcile still holding it finishes on its own."""
        with self._guard:
            self._locks.pop((namespace, name), None)

    def __len__(self) -> int:
        with self._guard:
            return len(self._locks)


class ChildLedger:
    """Each owner's children as last applied by this process. Owners seen for the
    first time since start-up get their children listed once, to find leftovers."""

    def __init__(self, list_children: Callable[[str, str], list[Object]]) -> None:
        self._list = list_children
        """Lists an owner's children in the API server: (namespace, owner) -> objects."""
        self._lock = threading.Lock()
        self._children: dict[tuple[str, str], set[tuple[str, str]]] = {}

    def stale(
        self, namespace: str, owner: str, wanted: set[tuple[str, str]], *, fresh: bool
    ) -> set[tuple[str, str]]:
        """Children of `owner` that exist (or may) but are no longer wanted.

        `fresh` owners were never reconciled, so they can have no leftovers to list.
        """
        with self._lock:
            known = self._children.get((namespace, owner))
        if known is None:
            listed = [] if fresh else self._list(namespace, owner)
            known = {(c["kind"], c["metadata"]["name"]) for c in listed}
        with self._lock:
            self._children[(namespace, owner)] = set(wanted)
        return known - wanted

    def forget(self, namespace: str, owner: str) -> None:
        with self._lock:
            self._children.pop((namespace, owner), None)


class ChangeFilter:
    """Remembers the last change key handled per object (by uid), so that the echo of
    our own status writes does not run a reconcile again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, Any] = {}

    def seen(self, body: Object, key: Any) -> bool:
        """True if `key` was already handled for this object."""
        with self._lock:
            return bool(self._keys.get(body["metadata"]["uid"]) == key)

    def handled(self, body: Object, key: Any) -> None:
        """Record `key` as handled; call after a reconcile succeeded."""
        with self._lock:
            self._keys[body["metadata"]["uid"]] = key

    def forget(self, body: Object) -> None:
        """Drop a deleted object's key: uids are never reused, so it would only grow."""
        with self._lock:
            self._keys.pop(body["metadata"]["uid"], None)


class VersionIndex:
    """ModelVersions by (namespace, model), fed by the watch. Only hits are trusted:
    a reconcile that finds nothing here asks the API server, since the watch may lag."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[tuple[str, str], dict[str, Object]] = {}
        self._model_of: dict[tuple[str, str], str] = {}

    def update(self, mv: Object, deleted: bool) -> None:
        meta = mv["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        with self._lock:
            previous = self._model_of.pop((namespace, name), None)
            if previous is not None:
                versions = self._versions.get((namespace, previous), {})
                versions.pop(name, None)
                if not versions:  # the model's last version: its entry goes too
                    self._versions.pop((namespace, previous), None)
            if not deleted:
                model = mv.get("spec", {}).get("model", "")
                self._model_of[(namespace, name)] = model
                self._versions.setdefault((namespace, model), {})[name] = mv

    def get(self, namespace: str, model: str) -> list[Object]:
        with self._lock:
            return list(self._versions.get((namespace, model), {}).values())

    def named(self, namespace: str, name: str) -> Object | None:
        with self._lock:
            model = self._model_of.get((namespace, name))
            return None if model is None else self._versions[(namespace, model)].get(name)


class Latest:
    """The newest body of each watched object, by (namespace, name)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bodies: dict[tuple[str, str], Object] = {}

    def update(self, body: Object, deleted: bool) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        with self._lock:
            if deleted:
                self._bodies.pop(key, None)
            else:
                self._bodies[key] = body

    def offer(self, body: Object) -> None:
        """Index `body` if the object is not indexed yet; the watch's bodies take precedence."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        with self._lock:
            self._bodies.setdefault(key, body)

    def get(self, namespace: str, name: str) -> Object | None:
        with self._lock:
            return self._bodies.get((namespace, name))


LOCKS = LockTable()
VERSIONS = VersionIndex()
DEPLOYMENTS = Latest()
"""ModelDeployments, as the watch last delivered them (or our status writes returned)."""
CHILD_DEPLOYMENTS = Latest()
"""The tracks' and routers' Deployments, as last applied or watched."""
