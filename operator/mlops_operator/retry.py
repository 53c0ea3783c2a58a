"""Reconciles that raised, run again with backoff.

kopf does not retry on.event handlers: a reconcile that raises (an API server
restarting, an admission webhook refusing a child for a while) would otherwise wait
for the periodic resync, minutes away. Like a controller-runtime requeue, a failed
object is reconciled again as it is then, after 1, 2, 5, 10, 30 and then every 60 s,
until a reconcile works or the object is gone. One retry at most is pending per object,
and a reconcile that works (from a new event, say) cancels it.
"""

import asyncio
import logging
from collections.abc import Callable
from typing import Any

DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)

Key = tuple[str, str, str]
"""(plural, namespace, name)"""
Log = logging.Logger | logging.LoggerAdapter[Any]


class Retries:
    def __init__(self, reconcile_latest: Callable[[Key, Log], None]) -> None:
        self.reconcile_latest = reconcile_latest
        """Reads the object again and reconciles it (blocking; runs in a thread)."""
        self.pending: dict[Key, asyncio.Task[None]] = {}

    async def run(self, key: Key, work: Callable[[], None], logger: Log, attempt: int = 0) -> None:
        """Run a reconcile in a thread; if it raises, log it and schedule a retry."""
        try:
            await asyncio.to_thread(work)
        except Exception:
            logger.exception("reconcile of %s %s/%s failed; it will be retried", *key)
            if key not in self.pending:
                delay = DELAYS[min(attempt, len(DELAYS) - 1)]
                self.pending[key] = asyncio.get_running_loop().create_task(
                    self._retry(key, delay, attempt + 1, logger)
                )
        else:
            task = self.pending.pop(key, None)
            if task is not None:
                task.cancel()

    async def _retry(self, key: Key, delay: float, attempt: int, logger: Log) -> None:
        await asyncio.sleep(delay)
        del self.pending[key]  # from here on, a failure schedules the next retry
        logger.info("retry %d of the reconcile of %s %s/%s", attempt, *key)
        await self.run(key, lambda: self.reconcile_latest(key, logger), logger, attempt)

    def cancel(self) -> None:
        for task in self.pending.values():
            task.cancel()
        self.pending.clear()
