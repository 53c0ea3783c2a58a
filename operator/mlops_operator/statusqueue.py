"""The status writer's queue: the newest state of each owner's tracks, written in batches."""

import threading
import time
from typing import Any, Generic, TypeVar

Object = dict[str, Any]
T = TypeVar("T")


class StatusQueue(Generic[T]):
    """Coalesces status writes: only the newest state of each child is kept, by owner
    and track, and they are written in batches, so that bursts of Deployment status
    events neither write one status per event nor hold up the reconciles that create
    children.

    An entry may carry what the owner's reconcile resolved for the track (`resolved`,
    e.g. the version it rolled out), kept when later child states replace it."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str], dict[str, tuple[Object, T | None]]] = {}
        self._ready = threading.Condition()

    def submit(
        self, namespace: str, owner: str, track: str, child: Object, resolved: T | None = None
    ) -> None:
        with self._ready:
            tracks = self._pending.setdefault((namespace, owner), {})
            previous = tracks.get(track)
            if resolved is None and previous is not None:
                resolved = previous[1]
            tracks[track] = (child, resolved)
            self._ready.notify()

    def take(
        self, timeout: float, linger: float
    ) -> dict[tuple[str, str], dict[str, tuple[Object, T | None]]]:
        """Wait up to `timeout` for a first change, then `linger` for more to join it."""
        with self._ready:
            if not self._pending and not self._ready.wait(timeout):
                return {}
        time.sleep(linger)
        with self._ready:
            taken, self._pending = self._pending, {}
            return taken
