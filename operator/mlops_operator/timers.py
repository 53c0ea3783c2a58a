"""When each DriftMonitor runs next: one asyncio loop over per-object due times.

Not kopf's timers: those keep a finalizer on every object, and fix the interval when
the handler starts. Here each due time is computed from the object's status
(`driftmonitor.due_in`), so a restarted operator neither repeats a run nor waits a
whole interval, and deletion never waits for the operator.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from mlops_operator.retry import Key

RETRY_SECONDS = 30.0
"""Wait after a run that raised (the monitor's own errors are its status, not this)."""
Log = logging.Logger | logging.LoggerAdapter[Any]


class Timers:
    def __init__(self, run: Callable[[Key], float | None], logger: Log) -> None:
        self.run = run
        """Runs one object if it is due (blocking; in a thread): the seconds until it
        is due again, or None to wait for its next event."""
        self.logger = logger
        self.due: dict[Key, float] = {}
        self.running: set[Key] = set()
        self.wake = asyncio.Event()

    def plan(self, key: Key, delay: float | None) -> None:
        """Run `key` after `delay` seconds (replacing its earlier plan), or never (None)."""
        if delay is None:
            self.due.pop(key, None)
        else:
            self.due[key] = time.monotonic() + delay
        self.wake.set()

    async def loop(self) -> None:
        while True:
            now = time.monotonic()
            for key in [k for k, at in self.due.items() if at <= now and k not in self.running]:
                del self.due[key]
                self.running.add(key)
                asyncio.get_running_loop().create_task(self._run(key))
            waiting = [at for k, at in self.due.items() if k not in self.running]
            self.wake.clear()
            timeout = max(0.0, min(waiting) - now) if waiting else None
            try:
                await asyncio.wait_for(self.wake.wait(), timeout)
            except TimeoutError:
                continue

    async def _run(self, key: Key) -> None:
        try:
            delay = await asyncio.to_thread(self.run, key)
        except Exception:
            self.logger.exception("run of %s %s/%s failed; again in %s s", *key, RETRY_SECONDS)
            delay = RETRY_SECONDS
        finally:
            self.running.discard(key)
        if key not in self.due and delay is not None:  # an event may have planned it meanwhile
            self.due[key] = time.monotonic() + delay
        self.wake.set()
