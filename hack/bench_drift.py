"""Drift engine benchmark: our engine against Evidently, alibi-detect and a scipy loop.

Workload: 50 numeric features, a 100,000-row reference and a 10,000-row window in
which 10 features are shifted by 0.01 to 0.1 standard deviations. Everything runs
on one CPU (--cpu). Our engine and the scipy loop run in this process, in
alternating order, --rounds times; Evidently (DataDriftPreset) and alibi-detect
(TabularDrift) run in their own virtual environment (Evidently 0.7 needs
pandas < 3), created once under MLOPS_CACHE_DIR, --peer-repeats times each.

Our engine's reference is prepared once (sorted columns and bins), as profile.json
is at bundle time, and alibi-detect's detector holds its reference likewise; the
"cold" row adds preparing it from the raw reference to one run. Each method's
time is one detect_drift call over all 50 features. Times are medians, with the
lowest and highest in brackets; ratios are of medians.

    python hack/bench_drift.py [--rounds 7] [--peer-repeats 3] [--cpu 1]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.stats

from mlops_operator.drift import Reference, Tests, detect_drift

CACHE = Path(os.environ.get("MLOPS_CACHE_DIR", Path.home() / ".cache" / "mlops-operator")) / "bench"
PEERS = ["evidently==0.7.23", "alibi-detect==0.13.0", "pandas<3"]
FEATURES, REFERENCE_ROWS, WINDOW_ROWS, SHIFTED = 50, 100_000, 10_000, 10
METHODS = ["auto", "ks", "wasserstein", "psi", "jensenshannon"]


def workload() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    reference = rng.normal(size=(REFERENCE_ROWS, FEATURES))
    current = rng.normal(size=(WINDOW_ROWS, FEATURES))
    current[:, :SHIFTED] += np.linspace(0.01, 0.1, SHIFTED)
    return reference, current


def columns(matrix: np.ndarray) -> dict[str, np.ndarray]:
    return {f"x{i}": np.ascontiguousarray(matrix[:, i]) for i in range(matrix.shape[1])}


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def peer_python() -> Path:
    venv = CACHE / "drift-peers"
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    wanted = " ".join(PEERS)
    if not stamp.exists() or stamp.read_text() != wanted:
        print(f"installing {wanted} into {venv} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEERS], check=True)
        stamp.write_text(wanted)
    return python


def run_peer(name: str, data: Path, repeats: int) -> dict[str, object]:
    script = Path(__file__).parent / "bench" / "drift_peers.py"
    done = subprocess.run(
        [str(peer_python()), str(script), name, str(data), str(repeats)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def spread(seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return f"{statistics.median(ms):,.1f} [{min(ms):,.1f}-{max(ms):,.1f}]"


def agreement(ours: dict[str, bool], theirs: dict[str, bool]) -> str:
    same = sum(ours[name] == theirs.get(name) for name in ours)
    return f"{same}/{len(ours)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--peer-repeats", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=1)
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})  # peers started from here inherit it

    reference, current = workload()
    ref_columns, cur_columns = columns(reference), columns(current)
    start = time.perf_counter()
    prepared = Reference.from_frame(ref_columns)
    prepare_seconds = time.perf_counter() - start
    first_seconds = timed(lambda: detect_drift(prepared, cur_columns, tests=Tests("ks")))

    ours: dict[str, list[float]] = {m: [] for m in METHODS}
    ours["cold (auto)"] = []
    scipy_loop: list[float] = []
    scipy_ks: list[scipy.stats._stats_py.KstestResult] = []

    def run_scipy() -> None:
        scipy_ks[:] = [
            scipy.stats.ks_2samp(reference[:, i], current[:, i]) for i in range(FEATURES)
        ]

    tasks: list[tuple[list[float], Callable[[], object]]] = [
        (ours[m], lambda m=m: detect_drift(prepared, cur_columns, tests=Tests(m)))  # type: ignore[misc]
        for m in METHODS
    ]
    tasks.append((ours["cold (auto)"], lambda: detect_drift(ref_columns, cur_columns)))
    tasks.append((scipy_loop, run_scipy))
    for round_ in range(args.rounds):
        for seconds, run in tasks if round_ % 2 == 0 else tasks[::-1]:
            seconds.append(timed(run))

    ks_report = detect_drift(prepared, cur_columns, tests=Tests("ks"))
    ours_ks = {f.name: f.drifted for f in ks_report.features}
    scipy_drifted = {f"x{i}": bool(r.pvalue < 0.05) for i, r in enumerate(scipy_ks)}

    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "reference.npy", reference)
        np.save(Path(tmp) / "current.npy", current)
        evidently = run_peer("evidently", Path(tmp), args.peer_repeats)
        alibi = run_peer("alibi", Path(tmp), args.peer_repeats)

    baseline = statistics.median(ours["ks"])
    print(
        f"\n{FEATURES} numeric features, {REFERENCE_ROWS:,} reference rows, {WINDOW_ROWS:,}-row "
        f"window ({SHIFTED} features shifted by 0.01-0.1 sd), all on CPU {args.cpu}; "
        f"{args.rounds} rounds, peers {args.peer_repeats} runs each\n"
    )
    print(
        "| engine | ms per window: median [min-max] | our ks is x faster | KS decisions as ours |"
    )
    print("|---|---:|---:|---|")
    for method in [*METHODS, "cold (auto)"]:
        print(f"| mlops drift, {method} | {spread(ours[method])} | | |")
    rows = [
        ("scipy ks_2samp loop", scipy_loop, agreement(ours_ks, scipy_drifted)),
        (
            "Evidently DataDriftPreset (its default: wasserstein)",
            evidently["seconds"],
            f"{agreement(ours_ks, evidently['drifted'])} (its ks preset, "  # type: ignore[arg-type]
            f"{spread(evidently['ks_seconds'])} ms)",  # type: ignore[arg-type]
        ),
        (
            "alibi-detect TabularDrift (ks)",
            alibi["seconds"],
            agreement(ours_ks, alibi["drifted"]),  # type: ignore[arg-type]
        ),
    ]
    for name, seconds, agree in rows:
        ratio = statistics.median(seconds) / baseline  # type: ignore[arg-type]
        print(f"| {name} | {spread(seconds)} | {ratio:,.0f} | {agree} |")  # type: ignore[arg-type]
    print(
        f"\nreference prepared once in {prepare_seconds * 1000:,.0f} ms; the first call "
        f"(numba compiles the walk) took {first_seconds * 1000:,.0f} ms; "
        f"KS drifted (ours, p < 0.05): {sorted(n for n, d in ours_ks.items() if d)}"
    )


if __name__ == "__main__":
    main()
