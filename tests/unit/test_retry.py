"""Retries of reconciles that raised: backoff, one pending per object, cancelled by success."""

import asyncio
import logging
from collections.abc import Callable

import pytest

from mlops_operator import retry

LOG = logging.getLogger("test")
KEY = ("modeldeployments", "ns", "m")


@pytest.fixture(autouse=True)
def short_delays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "DELAYS", (0.01, 0.02, 0.05))


def failing(times: int, calls: list[str], name: str) -> Callable[[], None]:
    def work() -> None:
        calls.append(name)
        if calls.count(name) <= times:
            raise RuntimeError(f"{name} failed")

    return work


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.005)


async def test_a_failed_reconcile_is_retried_until_it_works() -> None:
    calls: list[str] = []
    latest = failing(2, calls, "latest")
    retries = retry.Retries(lambda key, logger: latest())
    await retries.run(KEY, failing(1, calls, "event"), LOG)
    await until(lambda: calls.count("latest") == 3)
    await until(lambda: not retries.pending)
    assert calls == ["event", "latest", "latest", "latest"]


async def test_one_retry_per_object() -> None:
    calls: list[str] = []
    retries = retry.Retries(lambda key, logger: calls.append("latest"))
    await retries.run(KEY, failing(9, calls, "event"), LOG)
    await retries.run(KEY, failing(9, calls, "event"), LOG)  # a second failure, same object
    await until(lambda: "latest" in calls)
    await asyncio.sleep(0.1)  # past every delay: a second retry would have run by now
    assert calls == ["event", "event", "latest"]


async def test_a_later_success_cancels_the_retry() -> None:
    calls: list[str] = []
    retries = retry.Retries(lambda key, logger: calls.append("latest"))
    await retries.run(KEY, failing(9, calls, "event"), LOG)
    await retries.run(KEY, lambda: calls.append("later event"), LOG)
    await asyncio.sleep(0.1)
    assert calls == ["event", "later event"]


async def test_cancel_drops_every_pending_retry() -> None:
    calls: list[str] = []
    retries = retry.Retries(lambda key, logger: calls.append("latest"))
    await retries.run(KEY, failing(1, calls, "event"), LOG)
    await retries.run(("modelversions", "ns", "v"), failing(1, calls, "other"), LOG)
    retries.cancel()
    await asyncio.sleep(0.1)
    assert calls == ["event", "other"]
