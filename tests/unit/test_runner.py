"""Dynamic batching: batches never pass max_batch_size, and every caller gets its rows."""

import asyncio
from typing import Any

import numpy as np
import numpy.typing as npt

from mlops_serving.loaders import Outputs, Task
from mlops_serving.runner import Runner


class Doubler:
    """A model that answers 2x and records the size of every call."""

    def __init__(self) -> None:
        self.task: Task = "regression"
        self.classes: list[Any] = []
        self.calls: list[int] = []

    def predict(self, features: npt.NDArray[Any]) -> Outputs:
        self.calls.append(len(features))
        doubled = features[:, 0] * 2
        return Outputs({"predict": doubled}, doubled)


async def test_batches_stay_within_max_batch_size() -> None:
    model = Doubler()
    runner = Runner(model, inline=True, max_batch_size=32, max_latency_ms=50)
    sizes = [30, 10, 5, 20, 40, 1, 31, 2]
    requests = [np.arange(n, dtype=float).reshape(-1, 1) + 100 * i for i, n in enumerate(sizes)]
    answers = await asyncio.gather(*(runner(rows) for rows in requests))
    await runner.close()
    for rows, answer in zip(requests, answers, strict=True):
        assert answer.primary.tolist() == (rows[:, 0] * 2).tolist()
    assert sum(model.calls) == sum(sizes)
    assert max(model.calls) == 40  # only a request larger than the limit exceeds it, alone
    assert all(n <= 32 for n in model.calls if n != 40)
    assert len(model.calls) < len(sizes)  # requests were still joined
