"""The heartbeat behind /healthz notices when no reconcile worker is free."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from mlops_operator.health import Heartbeat


async def test_heartbeat_goes_silent_while_every_worker_is_busy() -> None:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(1))
    heartbeat = Heartbeat(interval=0.01)
    beating = loop.create_task(heartbeat.loop())
    release = threading.Event()
    try:
        await asyncio.sleep(0.1)
        assert heartbeat.silent_for() < 0.1
        blocked = loop.run_in_executor(None, release.wait)  # the only worker, stuck
        await asyncio.sleep(0.5)
        assert heartbeat.silent_for() >= 0.4
        release.set()
        await blocked
        await asyncio.sleep(0.1)
        assert heartbeat.silent_for() < 0.1
    finally:
        release.set()
        beating.cancel()
