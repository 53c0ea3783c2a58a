#!/usr/bin/env python3
"""Serving benchmark: mlops-serve against MLServer, KServe and a bare FastAPI app,
and the cost of the canary router in front of mlops-serve.

One model (a scikit-learn scaler + logistic regression pipeline on the breast
cancer dataset that ships with scikit-learn, 30 features), the same Open
Inference Protocol v2 payloads (1 row and 100 rows) to every server. Each
server runs one worker pinned to CPU 0; wrk runs pinned to CPU 1. Each round
runs every server once, in a shuffled order; the table shows medians over rounds.
The ratios are medians of the ratios within each round, which cancels the slow
drift of a shared machine's speed better than a ratio of medians.

Capture's cost (at a sample rate of 1.0) is measured two ways, each timed and
counted by the servers themselves (bench/capture_switch.py), with 95% bootstrap
intervals. A shared VM's speed swings by about 13% from one half second to the
next, more than the cost, so neither compares separate runs:
- One process under one wrk run, switched every 50 ms through rounds of capture
  on, off, and on again, in a shuffled order. "on / off" is the cost; "on / on
  again" shows the method's own spread. Adjacent 50 ms phases share the slow
  swings, which 1 s phases did not (about 3 times the spread).
- Twins: two identical mlops-serve processes on one CPU, each loaded by its own
  wrk, taking turns every 20 ms, with capture on in one and off in the other,
  crossing over every second. Each twin's CPU per request over the other's
  cancels the machine's speed, which they share; the crossover cancels their own
  difference. Its spread is about a third of the single process's, per second
  measured. Taking turns also shares the CPU's caches, which hides some of what
  capture's buffers cost the requests around them in a process alone.
The share of the server's CPU spent in Capture.record, timed inside it, is shown
too: capture's direct cost, without what it does to the caches.

The router row sends the same requests through `mlops-serve router` to the
mlops-serve process above, in the same rounds as the direct calls. With two CPUs
the router cannot have one of its own (in a cluster it has its own pod): it runs
on wrk's CPU, so it competes with the load generator, never with the backend.
Set --capture-seconds 0 and --twin-seconds 0 to skip the capture measurements.

    python hack/bench_serving.py [--seconds 3] [--repeats 9] [--connections 8]
                                 [--capture-seconds 180] [--twin-seconds 120]

Peers are installed from PyPI into virtual environments under
~/.cache/mlops-operator/bench (MLOPS_CACHE_DIR) on first use. Needs wrk
(apt-get install wrk) and two CPUs.
"""

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np
import numpy.typing as npt
from mlops_contract.digest import file_digest
from mlops_contract.routing import TABLE_KEY, Backend, RoutingTable, render
from sklearn import __version__ as sklearn_version
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlops_serving import packing

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("MLOPS_CACHE_DIR", Path.home() / ".cache" / "mlops-operator")) / "bench"
PEER_PACKAGES = {
    "mlserver": ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.22"],
    "kserve": ["kserve==0.21.0"],
}
SERVER_CPU, LOAD_CPU = "0", "1"
CAPTURE_PHASES = {"on": signal.SIGUSR2, "off": signal.SIGUSR1, "on again": signal.SIGUSR2}
"""Phases of a capture round, and the signal that sets bench/capture_switch.py for each."""
SWITCH_SECONDS = 0.05
"""Length of one process's capture phases: adjacent phases share the machine's slow
swings in speed, which 1 s phases did not (about 3 times the spread)."""
PHASE_SECONDS, SETTLE_SECONDS = 1.0, 0.1
"""The twins' phases, and the time each is left to settle before it is measured."""
TWIN_SLICE_SECONDS = 0.02
"""How long each of the two twins runs alone on the CPU before the other's turn."""
ROUTER = "mlops-serve via router"


@dataclass
class Server:
    name: str
    command: list[str]
    port: int
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    model: str = "bench"
    cpu: str = SERVER_CPU

    @property
    def infer_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2/models/{self.model}/infer"


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def peer_python(name: str) -> Path:
    """The peer's own venv (created once), with our scikit-learn version for the same model file."""
    venv = CACHE / name
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    wanted = " ".join([*PEER_PACKAGES[name], f"scikit-learn=={sklearn_version}"])
    if not stamp.exists() or stamp.read_text() != wanted:
        print(f"installing {name} into {venv} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *wanted.split()], check=True)
        stamp.write_text(wanted)
    return python


def prepare(work: Path) -> tuple[Path, Path, str, np.ndarray]:
    data = load_breast_cancer(as_frame=True)
    frame = data.data
    frame.columns = [re.sub(r"\W+", "_", c) for c in frame.columns]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(
        frame.to_numpy(), data.target
    )
    model_file = work / "model.joblib"
    joblib.dump(model, model_file)
    tarball = packing.build(model, frame, work / "bench.tar.gz", name="bench", version="1")
    return model_file, tarball, file_digest(tarball), frame.to_numpy()


def payload(rows: np.ndarray) -> str:
    return json.dumps(
        {
            "id": "bench",
            "inputs": [
                {
                    "name": "input-0",
                    "shape": list(rows.shape),
                    "datatype": "FP64",
                    "data": rows.ravel().tolist(),
                }
            ],
            "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
        }
    )


def servers(work: Path, model_file: Path, tarball: Path, digest: str) -> list[Server]:
    ours = [sys.executable, str(HERE / "bench" / "capture_switch.py"), str(capture_log(work))]
    base = {
        "MLOPS_SERVING_MODEL_URI": f"file://{tarball}",
        "MLOPS_SERVING_MODEL_DIGEST": digest,
        "MLOPS_SERVING_HOST": "127.0.0.1",
        "MLOPS_SERVING_WORKERS": "1",
        "MLOPS_SERVING_CACHE_DIR": str(work / "cache"),
        "MLOPS_SERVING_LOG_LEVEL": "warning",
    }
    mlserver_dir = work / "mlserver"
    (mlserver_dir / "bench").mkdir(parents=True)
    shutil.copy(model_file, mlserver_dir / "bench" / "model.joblib")
    (mlserver_dir / "bench" / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "bench",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "1"},
            }
        )
    )
    mlserver_port = free_port()
    (mlserver_dir / "settings.json").write_text(
        json.dumps(
            {
                "http_port": mlserver_port,
                "grpc_port": free_port(),
                "metrics_port": free_port(),
                "host": "127.0.0.1",
            }
        )
    )
    mlserver = peer_python("mlserver")
    kserve = peer_python("kserve")
    ours_port, kserve_port, bare_port, router_port = (free_port() for _ in range(4))
    table = work / TABLE_KEY
    table.write_text(
        render(RoutingTable(backends={"stable": Backend("bench", f"http://127.0.0.1:{ours_port}")}))
    )
    return [
        Server("mlops-serve", ours, ours_port, {**base, "MLOPS_SERVING_PORT": str(ours_port)}),
        Server(
            ROUTER,
            [sys.executable, "-m", "mlops_serving.serve", "router"],
            router_port,
            {
                "MLOPS_ROUTER_HOST": "127.0.0.1",
                "MLOPS_ROUTER_PORT": str(router_port),
                "MLOPS_ROUTER_TABLE_FILE": str(table),
                "MLOPS_ROUTER_LOG_LEVEL": "warning",
            },
            cpu=LOAD_CPU,
        ),
        Server(
            "MLServer",
            [str(mlserver.parent / "mlserver"), "start", str(mlserver_dir)],
            mlserver_port,
        ),
        Server(
            "KServe",
            [
                str(kserve),
                str(HERE / "bench" / "peers.py"),
                "kserve",
                str(model_file),
                str(kserve_port),
            ],
            kserve_port,
        ),
        Server(
            "bare FastAPI",
            [
                sys.executable,
                str(HERE / "bench" / "peers.py"),
                "bare",
                str(model_file),
                str(bare_port),
            ],
            bare_port,
        ),
    ]


@contextlib.contextmanager
def running(server: Server, logs: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = (logs / f"{server.port}.log").open("w")
    process = subprocess.Popen(
        ["taskset", "-c", server.cpu, *server.command],
        env={**os.environ, **server.env},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=server.cwd,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{server.name} exited; see {log.name}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{server.port}/v2/health/ready", timeout=2
                ) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.name} not ready after 180 s")
            time.sleep(0.5)
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def check(server: Server, body: str) -> None:
    """One request by hand first, so a refusal shows its body rather than a wrk count."""
    request = urllib.request.Request(
        server.infer_url, body.encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise RuntimeError(
            f"{server.name} refused the payload: {error.code} {error.read()[:500]!r}"
        ) from None
    names = sorted(o["name"] for o in answer["outputs"])
    if names != ["predict", "predict_proba"]:
        raise RuntimeError(f"{server.name} answered outputs {names}")


def wrk_command(url: str, script: Path, seconds: float, connections: int) -> list[str]:
    return [
        "taskset",
        "-c",
        LOAD_CPU,
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]


def wrk(url: str, script: Path, seconds: int, connections: int) -> Sample:
    result = subprocess.run(
        wrk_command(url, script, seconds, connections),
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    )
    out = result.stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"errors while loading {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def percentile(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return Sample(rps, percentile("50"), percentile("99"))


@dataclass
class CaptureRound:
    """One round of the capture measurement, per phase, from the server's own clocks and
    counters: requests served, seconds, CPU seconds, and seconds spent in capture."""

    served: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    spent: dict[str, float] = field(default_factory=dict)


def capture_rounds(
    server: Server,
    pid: int,
    script: Path,
    log: Path,
    *,
    seconds: int,
    connections: int,
    order: random.Random,
) -> list[CaptureRound]:
    """mlops-serve switched through the phases of each round, under one wrk run, each
    measured from its switch to the next on the server's own clocks and counters
    (bench/capture_switch.py). Its first requests may have started in the phase
    before; with about 40 requests a phase, leaving out its first 5 or 10 did not
    change the figure."""
    logged = lines(log)
    load = subprocess.Popen(
        wrk_command(server.infer_url, script, seconds + 10, connections),
        stdout=subprocess.DEVNULL,
    )
    rounds, phases = [], []
    try:
        time.sleep(1)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            rounds.append(CaptureRound())
            for phase in order.sample(list(CAPTURE_PHASES), len(CAPTURE_PHASES)):
                phases.append((rounds[-1], phase))
                os.kill(pid, CAPTURE_PHASES[phase])
                time.sleep(SWITCH_SECONDS)
        os.kill(pid, CAPTURE_PHASES["on"])  # ends the last phase
        time.sleep(SETTLE_SECONDS)
    finally:
        load.terminate()
        load.wait()
    marks = phase_marks(log, logged, len(phases), 1)
    for (each, phase), (served, elapsed, cpu, spent) in zip(phases, marks, strict=True):
        each.served[phase], each.seconds[phase] = served, elapsed
        each.cpu[phase], each.spent[phase] = cpu, spent
    return rounds


def phase_marks(log: Path, logged: int, phases: int, per_phase: int) -> list[list[float]]:
    """Per phase, from the marks bench/capture_switch.py logged after line `logged`:
    requests served, seconds, CPU seconds and seconds in capture. Each phase has
    `per_phase` marks (its switch, and one once it has settled), and ends at the
    next phase's switch."""
    marks = np.loadtxt(log.read_text().splitlines()[logged:], ndmin=2)
    if len(marks) != per_phase * phases + 1:
        raise RuntimeError(f"{len(marks)} marks logged for {phases} phases in {log}")
    start, end = marks[per_phase - 1 : -1 : per_phase], marks[per_phase::per_phase]
    clock, served, cpu, spent = (end - start).T
    phase: list[list[float]] = np.column_stack([served, clock, cpu, spent]).tolist()
    return phase


def lines(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


@dataclass
class TwinPhase:
    """One phase of the twins measurement: which twin had capture on, and per twin
    the requests it served and the CPU seconds it used."""

    on: int
    served: list[float]
    cpu: list[float]


def take_turns(pids: list[int], seconds: float) -> None:
    """Run the twins one at a time, TWIN_SLICE_SECONDS each, for `seconds`."""
    deadline, turn = time.monotonic() + seconds, 0
    try:
        while time.monotonic() < deadline:
            os.kill(pids[1 - turn], signal.SIGSTOP)
            os.kill(pids[turn], signal.SIGCONT)
            time.sleep(TWIN_SLICE_SECONDS)
            turn = 1 - turn
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def twin_phases(
    twins: list[Server],
    pids: list[int],
    script: Path,
    logs: list[Path],
    *,
    seconds: int,
    connections: int,
    order: random.Random,
) -> list[TwinPhase]:
    """Two identical mlops-serve processes on one CPU, each loaded by its own wrk, taking
    turns; capture is on in one and off in the other, crossing over every phase."""
    logged = [lines(log) for log in logs]
    loads = [
        subprocess.Popen(
            wrk_command(twin.infer_url, script, seconds + 10, max(connections // 2, 1)),
            stdout=subprocess.DEVNULL,
        )
        for twin in twins
    ]
    plan: list[int] = []
    try:
        time.sleep(1)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for on in order.sample([0, 1], 2):
                plan.append(on)
                for settle in (SETTLE_SECONDS, 0.0):  # switch, then mark once settled
                    for index, pid in enumerate(pids):
                        os.kill(pid, CAPTURE_PHASES["on" if index == on else "off"])
                    time.sleep(settle)
                take_turns(pids, PHASE_SECONDS)
        for pid in pids:
            os.kill(pid, CAPTURE_PHASES["on"])  # ends the last phase
        time.sleep(SETTLE_SECONDS)
    finally:
        for load in loads:
            load.terminate()
            load.wait()
    marks = [phase_marks(log, start, len(plan), 2) for log, start in zip(logs, logged, strict=True)]
    return [
        TwinPhase(on, [m[i][0] for m in marks], [m[i][2] for m in marks])
        for i, on in enumerate(plan)
    ]


def capture_log(work: Path, name: str = "mlops-serve") -> Path:
    """Where bench/capture_switch.py notes its clocks at every switch."""
    return work / f"{name.replace(' ', '-')}-capture.log"


def twin_of(server: Server, work: Path) -> Server:
    """A second mlops-serve, identical but for its port, cache and capture log."""
    name, port = f"{server.name} twin", free_port()
    return Server(
        name,
        [*server.command[:-1], str(capture_log(work, name))],
        port,
        {
            **server.env,
            "MLOPS_SERVING_PORT": str(port),
            "MLOPS_SERVING_CACHE_DIR": str(work / "twin-cache"),
        },
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--capture-seconds", type=int, default=180)
    parser.add_argument("--twin-seconds", type=int, default=120)
    parser.add_argument(
        "--only", action="append", help="run only servers whose name starts with this"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        print("needs wrk and taskset (apt-get install wrk util-linux)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_file, tarball, digest, rows = prepare(work)
        scripts = {}
        bodies = {}
        for label, batch in (("1 row", rows[:1]), ("100 rows", rows[:100])):
            script = work / f"{label.replace(' ', '_')}.lua"
            body = bodies[label] = payload(batch)
            script.write_text(
                'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                f"wrk.body = [==[{body}]==]\n"
            )
            scripts[label] = script
        results: dict[tuple[str, str], list[Sample]] = {}
        capture: dict[str, list[CaptureRound]] = {}
        twins: dict[str, list[TwinPhase]] = {}
        all_servers = [
            s
            for s in servers(work, model_file, tarball, digest)
            if not args.only
            or s.name == "mlops-serve"
            or any(s.name.startswith(o) for o in args.only)
        ]
        with contextlib.ExitStack() as stack:
            processes = {}
            for server in all_servers:
                processes[server.name] = stack.enter_context(running(server, work))
                for body in bodies.values():
                    check(server, body)
                wrk(server.infer_url, scripts["1 row"], 2, args.connections)  # warm-up
            order = random.Random(0)  # noqa: S311 - a reproducible shuffle, not a secret
            for repeat in range(args.repeats):
                for label, script in scripts.items():
                    # A fresh server order per round, so no server always follows another.
                    for server in order.sample(all_servers, len(all_servers)):
                        sample = wrk(server.infer_url, script, args.seconds, args.connections)
                        results.setdefault((server.name, label), []).append(sample)
                        print(
                            f"repeat {repeat + 1} {label:>8} {server.name:<26}"
                            f" {sample.rps:9.0f} rps"
                            f" p50 {sample.p50_ms:7.2f} ms p99 {sample.p99_ms:7.2f} ms",
                            file=sys.stderr,
                        )
            ours = next(s for s in all_servers if s.name == "mlops-serve")
            for label, script in scripts.items() if args.capture_seconds else ():
                print(f"capture on / off, {label}, {args.capture_seconds} s", file=sys.stderr)
                capture[label] = capture_rounds(
                    ours,
                    processes[ours.name].pid,
                    script,
                    capture_log(work),
                    seconds=args.capture_seconds,
                    connections=args.connections,
                    order=order,
                )
            if args.twin_seconds:
                twin = twin_of(ours, work)
                twin_pid = stack.enter_context(running(twin, work)).pid
                check(twin, bodies["100 rows"])
            for label, script in scripts.items() if args.twin_seconds else ():
                print(f"capture in twins, {label}, {args.twin_seconds} s", file=sys.stderr)
                twins[label] = twin_phases(
                    [ours, twin],
                    [processes[ours.name].pid, twin_pid],
                    script,
                    [capture_log(work), capture_log(work, twin.name)],
                    seconds=args.twin_seconds,
                    connections=args.connections,
                    order=order,
                )
        report(results, [s.name for s in all_servers], list(scripts), args)
        if ROUTER in processes:
            report_router(results, list(scripts))
        if capture and twins:
            report_capture(capture, twins)
    return 0


def report(results: dict[tuple[str, str], list[Sample]], names: list[str], labels: list[str],
           args: argparse.Namespace) -> None:  # fmt: skip
    print(
        f"\nmedians of {args.repeats} rounds x {args.seconds} s, {args.connections} connections, "
        f"server on CPU {SERVER_CPU}, wrk on CPU {LOAD_CPU}; ratios are medians of per-round "
        "ratios\n"
    )
    header = "| payload | server | rps | p50 ms | p99 ms | our rps / theirs | our p99 / theirs |"
    print(header)
    print("|---|---|---:|---:|---:|---:|---:|")
    for label in labels:
        ours = results[("mlops-serve", label)]
        for name in names:
            samples = results[(name, label)]
            rps_ratio = statistics.median(o.rps / t.rps for o, t in zip(ours, samples, strict=True))
            p99_ratio = statistics.median(
                o.p99_ms / t.p99_ms for o, t in zip(ours, samples, strict=True)
            )
            print(
                f"| {label} | {name} | {statistics.median(s.rps for s in samples):.0f}"
                f" | {statistics.median(s.p50_ms for s in samples):.2f}"
                f" | {statistics.median(s.p99_ms for s in samples):.2f}"
                f" | {rps_ratio:.2f} | {p99_ratio:.2f} |"
            )


def report_router(results: dict[tuple[str, str], list[Sample]], labels: list[str]) -> None:
    """What the router adds: per-round differences and ratios against the direct calls
    of the same round, as medians with their range over rounds."""
    print(f"\n{ROUTER}, against direct calls to the same mlops-serve process\n")
    print("| payload | added p50 ms | added p99 ms | rps through router / direct |")
    print("|---|---:|---:|---:|")
    for label in labels:
        pairs = list(zip(results[(ROUTER, label)], results[("mlops-serve", label)], strict=True))
        cells = [
            [r.p50_ms - d.p50_ms for r, d in pairs],
            [r.p99_ms - d.p99_ms for r, d in pairs],
            [r.rps / d.rps for r, d in pairs],
        ]
        print(
            f"| {label} | "
            + " | ".join(
                f"{statistics.median(c):.2f} ({min(c):.2f} to {max(c):.2f})" for c in cells
            )
            + " |"
        )


def pooled(rounds: list[CaptureRound], a: str, b: str) -> tuple[float, float, float]:
    """Throughput in phase a over throughput in phase b, all rounds pooled (requests over
    seconds), with a 95% bootstrap interval over rounds. Pooling weighs every second
    alike; a median of per-round ratios is noisier, and biased upwards by the noise."""
    served = np.array([[r.served[a], r.served[b]] for r in rounds])
    seconds = np.array([[r.seconds[a], r.seconds[b]] for r in rounds])
    picks = np.random.default_rng(0).integers(0, len(rounds), (2000, len(rounds)))
    rates = served[picks].sum(axis=1) / seconds[picks].sum(axis=1)
    low, high = np.quantile(rates[:, 0] / rates[:, 1], [0.025, 0.975])
    total = served.sum(axis=0) / seconds.sum(axis=0)
    return float(total[0] / total[1]), float(low), float(high)


def twin_ratio(phases: list[TwinPhase]) -> tuple[float, float, float]:
    """Throughput with capture on over off, from the twins, with a 95% bootstrap interval
    over phases. In each arrangement (capture on in twin 0, or in twin 1), twin 0's CPU
    per request over twin 1's is pooled over its phases. The machine's speed, which the
    twins share, cancels in each ratio, and the twins' own difference in the ratio of
    the two (whose square root is the cost)."""
    served = np.array([p.served for p in phases])
    cpu = np.array([p.cpu for p in phases])
    groups = [np.flatnonzero([p.on == twin for p in phases]) for twin in (0, 1)]

    def ratio(first: npt.NDArray[np.intp], second: npt.NDArray[np.intp]) -> float:
        a, b = (cpu[g].sum(axis=0) / served[g].sum(axis=0) for g in (first, second))
        return float(np.sqrt((b[0] / b[1]) / (a[0] / a[1])))

    rng = np.random.default_rng(0)
    spread = [ratio(*(g[rng.integers(0, len(g), len(g))] for g in groups)) for _ in range(2000)]
    low, high = np.quantile(spread, [0.025, 0.975])
    return ratio(*groups), float(low), float(high)


def report_capture(
    capture: dict[str, list[CaptureRound]], twins: dict[str, list[TwinPhase]]
) -> None:
    def ratio(a: str, b: str, rounds: list[CaptureRound]) -> str:
        middle, low, high = pooled(rounds, a, b)
        return f"x{middle:.3f} ({low:.3f}-{high:.3f})"

    print(
        f"\ncapture at sample rate 1.0, throughput on / off with 95% bootstrap intervals."
        f" One process: one mlops-serve under one wrk run, switched every"
        f" {SWITCH_SECONDS * 1000:.0f} ms, rounds pooled. Twins: two mlops-serve on CPU"
        f" {SERVER_CPU}, taking turns every"
        f" {TWIN_SLICE_SECONDS * 1000:.0f} ms, capture on in one and off in the other,"
        f" crossing over every {PHASE_SECONDS:.0f} s; CPU per request\n"
    )
    print(
        "| payload | rounds | one process: on / off | one process: on / on again (its spread)"
        " | capture's share of the CPU, timed inside | twins: phases | twins: on / off |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, rounds in capture.items():
        share = sum(r.spent["on"] for r in rounds) / sum(r.cpu["on"] for r in rounds)
        middle, low, high = twin_ratio(twins[label])
        print(
            f"| {label} | {len(rounds)} | {ratio('on', 'off', rounds)}"
            f" | {ratio('on', 'on again', rounds)} | {share:.1%}"
            f" | {len(twins[label])} | x{middle:.3f} ({low:.3f}-{high:.3f}) |"
        )


if __name__ == "__main__":
    sys.exit(main())
