#!/usr/bin/env python3
"""Serving benchmark: mlops-serve against MLServer, KServe and a bare FastAPI app.

One model (a scikit-learn scaler + logistic regression pipeline on the breast
cancer dataset that ships with scikit-learn, 30 features), the same Open
Inference Protocol v2 payloads (1 row and 100 rows) to every server. Each
server runs one worker pinned to CPU 0; wrk runs pinned to CPU 1. Each round
runs every server once, in a shuffled order; the table shows medians over rounds.
The ratios are medians of the ratios within each round, which cancels the slow
drift of a shared machine's speed better than a ratio of medians.

    python hack/bench_serving.py [--seconds 3] [--repeats 9] [--connections 8]

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
from sklearn import __version__ as sklearn_version
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlops_serving import bundle
from mlops_serving.digest import file_digest

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("MLOPS_CACHE_DIR", Path.home() / ".cache" / "mlops-operator")) / "bench"
PEER_PACKAGES = {
    "mlserver": ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.22"],
    "kserve": ["kserve==0.21.0"],
}
SERVER_CPU, LOAD_CPU = "0", "1"


@dataclass
class Server:
    name: str
    command: list[str]
    port: int
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    model: str = "bench"

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
    tarball = bundle.build(model, frame, work / "bench.tar.gz", name="bench", version="1")
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
    ours = [sys.executable, "-m", "mlops_serving.serve"]
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
    ours_port, quiet_port, kserve_port, bare_port = (free_port() for _ in range(4))
    return [
        Server("mlops-serve", ours, ours_port, {**base, "MLOPS_SERVING_PORT": str(ours_port)}),
        Server(
            "mlops-serve (no capture)",
            ours,
            quiet_port,
            {
                **base,
                "MLOPS_SERVING_PORT": str(quiet_port),
                "MLOPS_SERVING_CAPTURE_SAMPLE_RATE": "0",
            },
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
def running(server: Server, logs: Path) -> Iterator[None]:
    log = (logs / f"{server.port}.log").open("w")
    process = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, *server.command],
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
        yield
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


def wrk(url: str, script: Path, seconds: int, connections: int) -> Sample:
    result = subprocess.run(
        [
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
        ],
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--connections", type=int, default=8)
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
        all_servers = [
            s
            for s in servers(work, model_file, tarball, digest)
            if not args.only
            or s.name == "mlops-serve"
            or any(s.name.startswith(o) for o in args.only)
        ]
        with contextlib.ExitStack() as stack:
            for server in all_servers:
                stack.enter_context(running(server, work))
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
        report(results, [s.name for s in all_servers], list(scripts), args)
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
    quiet = "mlops-serve (no capture)"
    if quiet in names:
        print()
        for label in labels:
            pairs = zip(results[("mlops-serve", label)], results[(quiet, label)], strict=True)
            ratios = sorted(o.rps / q.rps for o, q in pairs)
            print(
                f"capture at sample rate 1.0, {label}: throughput x{statistics.median(ratios):.3f}"
                f" of capture off (per-round ratios {ratios[0]:.3f} to {ratios[-1]:.3f})"
            )


if __name__ == "__main__":
    sys.exit(main())
