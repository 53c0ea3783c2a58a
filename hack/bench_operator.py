#!/usr/bin/env python3
"""Operator benchmark: 200 ModelDeployments applied at once on the local control plane.

Measures, from the moment each create returns, the time until its children (the
stable Deployment and Service) exist (p50, p99), the time until all 200 report
Ready, and the operator process's peak RSS (VmHWM). Targets: p50 <= 1 s,
p99 <= 2 s, all Ready within 60 s, RSS <= 200 MB.

    hack/cluster.sh up && python hack/bench_operator.py [--count 200]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from mlops_operator.constants import GROUP, VERSION
from mlops_serving import bundle
from mlops_serving.digest import file_digest

ROOT = Path(__file__).resolve().parent.parent


def sh(*args: str) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="keep the namespace for inspection")
    args = parser.parse_args()
    kubeconfig = sh("bash", str(ROOT / "hack/cluster.sh"), "kubeconfig")
    config.load_kube_config(kubeconfig)
    sh(
        sh("bash", str(ROOT / "hack/cluster.sh"), "bin") + "/kubectl",
        "--kubeconfig",
        kubeconfig,
        "apply",
        "--server-side",
        "-f",
        str(ROOT / "crds"),
    )
    namespace = f"bench-{int(time.time())}"
    core, custom = client.CoreV1Api(), client.CustomObjectsApi()
    core.create_namespace({"metadata": {"name": namespace}})
    work = Path(tempfile.mkdtemp())
    frame, target = load_iris(return_X_y=True, as_frame=True)
    out = bundle.build(
        LogisticRegression(max_iter=500).fit(frame.to_numpy(), target),
        frame,
        work / "iris.tar.gz",
        name="iris",
        version="1",
    )
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "modelversions",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelVersion",
            "metadata": {"name": "iris-1"},
            "spec": {
                "model": "iris",
                "version": "1",
                "framework": "sklearn",
                "artifact": {"uri": f"file://{out}", "digest": file_digest(out)},
            },
        },
    )

    liveness, metrics = 18081, 18082
    env = {
        **os.environ,
        "KUBECONFIG": kubeconfig,
        "MLOPS_NAMESPACES": f'["{namespace}"]',
        "MLOPS_LIVENESS_PORT": str(liveness),
        "MLOPS_METRICS_PORT": str(metrics),
    }
    operator = subprocess.Popen(
        [sys.executable, "-m", "mlops_operator.cli", "--log-format", "plain"],
        env=env,
        stdout=(work / "operator.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{liveness}/healthz", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        code = run(args.count, namespace, custom, operator.pid, work)
        report_reconciles(metrics)
        return code
    finally:
        operator.terminate()
        operator.wait(timeout=30)
        if not args.keep:
            core.delete_namespace(namespace)


def run(count: int, namespace: str, custom: client.CustomObjectsApi, pid: int, work: Path) -> int:
    created: dict[str, float] = {}
    seen: dict[str, dict[str, float]] = {"Deployment": {}, "Service": {}}
    ready: dict[str, float] = {}
    stop = threading.Event()

    def watch_kind(kind: str, lister: Any) -> None:
        for event in watch.Watch().stream(lister, namespace, timeout_seconds=120):
            name = event["object"].metadata.name.removesuffix("-stable")
            seen[kind].setdefault(name, time.monotonic())
            if stop.is_set():
                return

    def watch_ready() -> None:
        stream = watch.Watch().stream(
            custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            "modeldeployments",
            timeout_seconds=180,
        )
        for event in stream:
            obj = event["object"]
            conditions = (obj.get("status") or {}).get("conditions", [])
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                ready.setdefault(obj["metadata"]["name"], time.monotonic())
            if len(ready) == count or stop.is_set():
                return

    apps, core = client.AppsV1Api(), client.CoreV1Api()
    threads = [
        threading.Thread(
            target=watch_kind, args=("Deployment", apps.list_namespaced_deployment), daemon=True
        ),
        threading.Thread(
            target=watch_kind, args=("Service", core.list_namespaced_service), daemon=True
        ),
        threading.Thread(target=watch_ready, daemon=True),
    ]
    for thread in threads:
        thread.start()
    time.sleep(1)

    def create(index: int) -> None:
        name = f"m{index:03d}"
        custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "modeldeployments",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ModelDeployment",
                "metadata": {"name": name},
                "spec": {"model": "iris", "stable": {"version": "1"}},
            },
        )
        created[name] = time.monotonic()

    start = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, range(count)))
    applied = time.monotonic() - start
    deadline = time.monotonic() + 180
    while len(ready) < count and time.monotonic() < deadline:
        time.sleep(0.5)
    stop.set()
    latencies = [
        max(seen["Deployment"][n], seen["Service"][n]) - created[n]
        for n in created
        if n in seen["Deployment"] and n in seen["Service"]
    ]
    all_ready = max(ready.values()) - start if len(ready) == count else float("nan")
    rss = peak_rss_mb(pid)
    print(
        f"\n{count} ModelDeployments created in {applied:.1f} s (16 client threads); "
        f"{len(latencies)} got children, {len(ready)} Ready\n"
    )
    print("| measure | value | target | met |")
    print("|---|---:|---:|---|")
    rows = [
        (
            "children exist, p50",
            f"{statistics.median(latencies):.2f} s",
            "<= 1 s",
            statistics.median(latencies) <= 1,
        ),
        (
            "children exist, p99",
            f"{percentile(latencies, 0.99):.2f} s",
            "<= 2 s",
            percentile(latencies, 0.99) <= 2,
        ),
        ("all Ready (from first create)", f"{all_ready:.1f} s", "<= 60 s", all_ready <= 60),
        ("operator peak RSS", f"{rss:.0f} MB", "<= 200 MB", rss <= 200),
    ]
    for measure, value, goal, met in rows:
        print(f"| {measure} | {value} | {goal} | {'yes' if met else 'no'} |")
    print(f"\noperator log: {work / 'operator.log'}")
    return 0


def report_reconciles(port: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    values = {
        (s.name, s.labels.get("kind", ""), s.labels.get("result", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("mlops_operator_reconcile")
    }
    for kind in ("ModelDeployment", "ModelDeploymentStatus", "ModelVersion"):
        count = values.get(("mlops_operator_reconcile_duration_seconds_count", kind, ""), 0)
        total = values.get(("mlops_operator_reconcile_duration_seconds_sum", kind, ""), 0)
        if count:
            print(f"{kind}: {count:.0f} reconciles, mean {1000 * total / count:.0f} ms")


if __name__ == "__main__":
    sys.exit(main())
