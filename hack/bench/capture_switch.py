"""mlops-serve with a switch for capture, for hack/bench_serving.py.

    python capture_switch.py LOG   runs `mlops-serve` (settings from the environment);
                                   SIGUSR1 then stops capture, SIGUSR2 starts it again

Capture's cost is a few percent, and two server processes differ by about as much
from each other: an identical twin of one served 1.04 times its throughput, as a
median of 20 short rounds. So the benchmark never compares two servers as they
are: it switches capture off and on within one process under load, and between two
twins it crosses capture over from one to the other. The switch sets the sample
rate: off, each request draws one random number and records nothing.

Each phase is timed and counted by the server itself: at every switch it appends to
LOG its monotonic clock, the requests it has seen (calls to Capture.sampled, one per
request whether capture is on or off), its CPU seconds so far, and the seconds spent
in Capture.record so far (two clock reads per request: all of capture's work on the
request path but the sample draw and a counter). A client that counts requests
through /metrics instead times each phase with that request's own latency, tens of
milliseconds under load, which is several percent of a half-second phase. Only the
benchmark uses this.
"""

import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import numpy.typing as npt

from mlops_serving import capture, serve

captures: list[capture.Capture] = []
construct = capture.Capture.__init__
record = capture.Capture.record
sampled = capture.Capture.sampled
spent = [0.0]
requests = [0]


def remember(self: capture.Capture, *args: Any, **kwargs: Any) -> None:
    construct(self, *args, **kwargs)
    captures.append(self)


def timed(self: capture.Capture, rows: npt.NDArray[Any], predictions: Any) -> None:
    start = time.perf_counter()
    record(self, rows, predictions)
    spent[0] += time.perf_counter() - start


def counted(self: capture.Capture) -> bool:
    requests[0] += 1
    return sampled(self)


def switch(rate: float, log: Path) -> Callable[[int, FrameType | None], None]:
    def handler(_signal: int, _frame: FrameType | None) -> None:
        for each in captures:
            each.sample_rate = rate
        with log.open("a") as out:
            out.write(f"{time.monotonic()} {requests[0]} {time.process_time()} {spent[0]}\n")

    return handler


if __name__ == "__main__":
    capture.Capture.__init__ = remember  # type: ignore[method-assign]
    capture.Capture.record = timed  # type: ignore[method-assign]
    capture.Capture.sampled = counted  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR1, switch(0.0, Path(sys.argv[1])))
    signal.signal(signal.SIGUSR2, switch(1.0, Path(sys.argv[1])))
    sys.exit(serve.main([]))
