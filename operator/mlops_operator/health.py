"""Liveness of the reconcile workers, for /healthz.

kopf's liveness endpoint answers as long as the event loop runs, even when every
reconcile worker is blocked and nothing gets reconciled. A heartbeat passes through
the same pool every few seconds; when none has got through for too long, the
probe fails, and Kubernetes restarts the operator.
"""

import asyncio
import time

BEAT_SECONDS = 5.0


class Heartbeat:
    def __init__(self, interval: float = BEAT_SECONDS) -> None:
        self.interval = interval
        self._last = time.monotonic()

    async def loop(self) -> None:
        """Beat through the event loop's default executor (the reconcile pool)."""
        while True:
            await asyncio.to_thread(self._beat)
            await asyncio.sleep(self.interval)

    def _beat(self) -> None:
        self._last = time.monotonic()

    def silent_for(self) -> float:
        """Seconds since a heartbeat last found a free worker."""
        return time.monotonic() - self._last
