"""Runs one drift peer on the benchmark's data, inside the peer's own virtual environment.

Usage: python drift_peers.py {evidently,alibi} DATA_DIR REPEATS
Prints one JSON line: the seconds of each timed run, and each column's KS verdict.
"""

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def evidently(reference: np.ndarray, current: np.ndarray, repeats: int) -> dict[str, Any]:
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    columns = [f"x{i}" for i in range(reference.shape[1])]
    ref, cur = pd.DataFrame(reference, columns=columns), pd.DataFrame(current, columns=columns)
    seconds = []
    for _ in range(repeats):  # its default: Wasserstein above 1000 reference rows
        start = time.perf_counter()
        Report([DataDriftPreset()]).run(cur, ref)
        seconds.append(time.perf_counter() - start)
    start = time.perf_counter()
    snapshot = Report([DataDriftPreset(method="ks", threshold=0.05)]).run(cur, ref).dict()
    ks_seconds = time.perf_counter() - start
    drifted = {}
    for metric in snapshot["metrics"]:
        config = metric.get("config") or {}
        if config.get("type", "").endswith("ValueDrift"):
            drifted[config["column"]] = bool(metric["value"] < config["threshold"])
    return {"seconds": seconds, "ks_seconds": [ks_seconds], "drifted": drifted}


def alibi(reference: np.ndarray, current: np.ndarray, repeats: int) -> dict[str, Any]:
    from alibi_detect.cd import TabularDrift

    seconds = []
    result: dict[str, Any] = {}
    for _ in range(repeats):  # the detector holds the reference, as a prepared one would
        # Per feature, TabularDrift compares each KS p-value with p_val uncorrected.
        detector = TabularDrift(reference, p_val=0.05)
        start = time.perf_counter()
        result = detector.predict(current, drift_type="feature", return_p_val=True)
        seconds.append(time.perf_counter() - start)
    flags = np.asarray(result["data"]["is_drift"]).astype(bool).tolist()
    return {"seconds": seconds, "drifted": {f"x{i}": f for i, f in enumerate(flags)}}


def main() -> None:
    peer, data, repeats = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    reference, current = np.load(data / "reference.npy"), np.load(data / "current.npy")
    run = {"evidently": evidently, "alibi": alibi}[peer]
    print(json.dumps(run(reference, current, repeats)))


if __name__ == "__main__":
    main()
