"""Run the model: inline for fast models, in a thread for slow ones, or batched.

A model whose one-row call takes less than the inline threshold runs on the
event loop, since a thread hop would cost more than the call. Slower models run
in a worker thread. With batching on, concurrent requests are joined into one
call of at most max_batch_size rows (a larger request is a batch of its own),
waiting at most max_latency_ms.
"""

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from starlette.concurrency import run_in_threadpool

from .loaders import Model, Outputs


def time_call(model: Model, rows: npt.NDArray[Any], repeats: int = 20) -> float:
    """Median seconds of one call on `rows` (the first, warm-up call not counted)."""
    model.predict(rows)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict(rows)
        timings.append(time.perf_counter() - start)
    return float(np.median(timings))


@dataclass
class _Pending:
    rows: npt.NDArray[Any]
    future: "asyncio.Future[Outputs]"


class Runner:
    """Calls the model for request handlers; see the module docstring for the modes."""

    def __init__(
        self, model: Model, inline: bool, max_batch_size: int = 0, max_latency_ms: float = 0
    ) -> None:
        self.model = model
        self.inline = inline
        self.max_batch_size = max_batch_size
        self.max_latency = max_latency_ms / 1000
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, rows: npt.NDArray[Any]) -> Outputs:
        if self.max_batch_size:
            return await self._batched(rows)
        if self.inline:
            return self.model.predict(rows)
        return await run_in_threadpool(self.model.predict, rows)

    async def _batched(self, rows: npt.NDArray[Any]) -> Outputs:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._collect(self._queue))
        future: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(rows, future))
        return await future

    async def _collect(self, queue: "asyncio.Queue[_Pending]") -> None:
        held: _Pending | None = None
        """A request that would have made the last batch too large: it starts the next."""
        while True:
            batch = [held or await queue.get()]
            held = None
            size = len(batch[0].rows)
            deadline = asyncio.get_running_loop().time() + self.max_latency
            while size < self.max_batch_size:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0 and queue.empty():
                    break
                try:
                    item = (
                        queue.get_nowait()
                        if timeout <= 0
                        else await asyncio.wait_for(queue.get(), timeout)
                    )
                except (TimeoutError, asyncio.QueueEmpty):
                    break
                if size + len(item.rows) > self.max_batch_size:
                    held = item
                    break
                batch.append(item)
                size += len(item.rows)
            await self._run(batch)

    async def _run(self, batch: list[_Pending]) -> None:
        try:
            rows = batch[0].rows if len(batch) == 1 else np.concatenate([p.rows for p in batch])
            outputs = (
                self.model.predict(rows)
                if self.inline
                else await run_in_threadpool(self.model.predict, rows)
            )
        except Exception as error:  # noqa: BLE001 - handed to every waiting request
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        start = 0
        for pending in batch:
            stop = start + len(pending.rows)
            if not pending.future.done():
                pending.future.set_result(outputs.rows(start, stop))
            start = stop

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
