#!/usr/bin/env python3
"""Operator benchmark: 200 ModelDeployments applied at once on the local control plane.

Measures, from the moment each object is created (its create call returns, or
kubectl prints it), the time until its children (the
stable Deployment and Service) exist (p50, p99), the time until all 200 report
Ready, and the operator process's peak RSS (VmHWM). Targets: p50 <= 1 s,
p99 <= 2 s, all Ready within 60 s, RSS <= 200 MB.

"At once" is one `kubectl apply --server-side -f` of all 200 (as people and GitOps
tools apply); `--load threads` instead creates them from 16 client threads at
once, a burst that saturates the API server of a 2-core machine.

The same run measures a floor: the least a controller must do, a bare watch loop
that server-side applies the same rendered children from as many threads, with no
kopf, no status and no events. It shows what the control plane itself allows on
this machine; the operator's figures are quoted as ratios to it. Runs alternate
between the two, each in a fresh namespace, and the table gives medians.

    hack/cluster.sh up && python hack/bench_operator.py [--repeats 3] [--load threads]
"""

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from mlops_contract.digest import file_digest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from mlops_operator import kube
from mlops_operator.api.modeldeployment import ModelDeploymentSpec
from mlops_operator.builders import Owner, RenderConfig, ResolvedVersion, render_track
from mlops_operator.constants import GROUP, VERSION
from mlops_serving import packing

ROOT = Path(__file__).resolve().parent.parent
ON_KWOK = {
    "nodeSelector": {"type": "kwok"},
    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
}


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


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    all_ready: float = float("nan")
    rss_mb: float = float("nan")
    created_in: float = 0.0
    notes: list[str] = field(default_factory=list)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--load",
        choices=["kubectl", "threads"],
        default="kubectl",
        help="one kubectl apply of all (default), or 16 client threads creating at once",
    )
    parser.add_argument("--floor-of", metavar="NAMESPACE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    kubeconfig = sh("bash", str(ROOT / "hack/cluster.sh"), "kubeconfig")
    os.environ["KUBECONFIG"] = kubeconfig
    if args.floor_of:
        return floor_controller(args.floor_of)
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
    work = Path(tempfile.mkdtemp())
    frame, target = load_iris(return_X_y=True, as_frame=True)
    artifact = packing.build(
        LogisticRegression(max_iter=500).fit(frame.to_numpy(), target),
        frame,
        work / "iris.tar.gz",
        name="iris",
        version="1",
    )
    results: dict[str, list[Result]] = {"mlops-operator": [], "floor": []}
    for round_ in range(args.repeats):
        order = list(results)
        random.shuffle(order)
        for who in order:
            namespace = f"bench-{who.split('-')[0]}-{round_}-{int(time.time())}"
            result = one_run(who, args.count, namespace, artifact, work, load=args.load)
            results[who].append(result)
            p50 = statistics.median(result.latencies)
            print(
                f"round {round_ + 1} {who}: children p50 {p50:.2f} s, "
                f"created in {result.created_in:.1f} s; " + "; ".join(result.notes),
                flush=True,
            )
    report(results, args.count, work, args.load)
    return 0


def one_run(
    who: str, count: int, namespace: str, artifact: Path, work: Path, *, load: str
) -> Result:
    """Create a namespace with the ModelVersion, start the controller, measure, clean up."""
    core, custom = client.CoreV1Api(), client.CustomObjectsApi()
    core.create_namespace({"metadata": {"name": namespace}})
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
                "artifact": {"uri": f"file://{artifact}", "digest": file_digest(artifact)},
            },
        },
    )
    log = (work / f"{namespace}.log").open("w")
    liveness, metrics = 18081, 18082
    if who == "floor":
        controller = subprocess.Popen(
            [sys.executable, __file__, "--floor-of", namespace],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        if controller.stdout is None or not controller.stdout.readline():
            raise RuntimeError(f"the floor controller did not start; see {log.name}")
    else:
        env = {
            **os.environ,
            "MLOPS_NAMESPACES": f'["{namespace}"]',
            "MLOPS_LIVENESS_PORT": str(liveness),
            "MLOPS_METRICS_PORT": str(metrics),
            "MLOPS_FILE_ARTIFACT_ROOT": str(artifact.parent),
        }
        controller = subprocess.Popen(
            [sys.executable, "-m", "mlops_operator.cli", "--log-format", "plain"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for_url(f"http://127.0.0.1:{liveness}/healthz")
    try:
        result = measure(count, namespace, custom, load=load, wait_ready=who != "floor")
        if who != "floor":
            result.rss_mb = peak_rss_mb(controller.pid)
            result.notes = operator_counts(metrics)
        return result
    finally:
        controller.terminate()
        controller.wait(timeout=30)
        core.delete_namespace(namespace)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # the next run starts on a quiet plane
            try:
                core.read_namespace(namespace)
            except client.ApiException:
                break
            time.sleep(1)


def wait_for_url(url: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def floor_controller(namespace: str) -> int:
    """The least a controller does: watch, render, server-side apply; nothing else."""
    custom = kube.custom_objects()
    listed: Any = custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, "modeldeployments"
    )
    config = RenderConfig("ghcr.io/mlops-dev/mlops-serving:0.1.0", 1, "cluster.local")

    def converge(mdep: dict[str, Any]) -> None:
        meta = mdep["metadata"]
        spec = ModelDeploymentSpec.model_validate(mdep["spec"])
        version = ResolvedVersion("iris-1", "iris", "1", "file:///iris.tar.gz", None)
        owner = Owner(meta["name"], namespace, meta["uid"])
        for child in render_track(spec, owner, "stable", version, config):
            kube.apply(child)

    print("watching", flush=True)
    with ThreadPoolExecutor(kube.WORKERS) as pool:
        for event in watch.Watch().stream(
            custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            "modeldeployments",
            resource_version=listed["metadata"]["resourceVersion"],
            timeout_seconds=600,
        ):
            if event["type"] == "ADDED":
                pool.submit(converge, event["object"])
    return 0


def note_ready(obj: dict[str, Any], ready: dict[str, float]) -> None:
    conditions = (obj.get("status") or {}).get("conditions", [])
    if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
        ready.setdefault(obj["metadata"]["name"], time.monotonic())


def watch_ready(
    custom: client.CustomObjectsApi,
    namespace: str,
    count: int,
    ready: dict[str, float],
    stop: threading.Event,
) -> None:
    """Every object's first Ready, from a list and a watch from its version; a
    watch that breaks under the load (200 objects' status writes) starts again."""
    while len(ready) < count and not stop.is_set():
        try:
            listed = custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, "modeldeployments"
            )
            for obj in listed["items"]:
                note_ready(obj, ready)
            for event in watch.Watch().stream(
                custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                "modeldeployments",
                resource_version=listed["metadata"]["resourceVersion"],
                timeout_seconds=60,
            ):
                if event["type"] != "ERROR":
                    note_ready(event["object"], ready)
                if len(ready) == count or stop.is_set():
                    return
        except Exception as error:  # noqa: BLE001 - any break: list and watch again
            print(f"the Ready watch broke ({error!r}); listing again", file=sys.stderr)
            time.sleep(0.5)


def measure(
    count: int, namespace: str, custom: client.CustomObjectsApi, *, load: str, wait_ready: bool
) -> Result:
    created: dict[str, float] = {}
    seen: dict[str, dict[str, float]] = {"Deployment": {}, "Service": {}}
    ready: dict[str, float] = {}
    stop = threading.Event()

    def watch_kind(kind: str, lister: Any) -> None:
        for event in watch.Watch().stream(lister, namespace, timeout_seconds=180):
            name = event["object"].metadata.name.removesuffix("-stable")
            seen[kind].setdefault(name, time.monotonic())
            if stop.is_set():
                return

    apps, core = client.AppsV1Api(), client.CoreV1Api()
    threads = [
        threading.Thread(
            target=watch_kind, args=("Deployment", apps.list_namespaced_deployment), daemon=True
        ),
        threading.Thread(
            target=watch_kind, args=("Service", core.list_namespaced_service), daemon=True
        ),
        threading.Thread(
            target=watch_ready, args=(custom, namespace, count, ready, stop), daemon=True
        ),
    ]
    for thread in threads:
        thread.start()
    time.sleep(1)

    def manifest(index: int) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelDeployment",
            "metadata": {"name": f"m{index:03d}", "namespace": namespace},
            # kwok's nodes: 200 deployments' pods need not run.
            "spec": {"model": "iris", "stable": {"version": "1"}, "scheduling": ON_KWOK},
        }

    def create(index: int) -> None:
        body = manifest(index)
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", body)
        created[body["metadata"]["name"]] = time.monotonic()

    start = time.monotonic()
    if load == "threads":
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(create, range(count)))
    else:  # one kubectl apply; it prints a line as each object is applied
        documents = Path(tempfile.mkdtemp()) / "all.json"
        items = [manifest(i) for i in range(count)]
        documents.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
        kubectl = subprocess.Popen(
            [sh("bash", str(ROOT / "hack/cluster.sh"), "bin") + "/kubectl", "apply",
             "--server-side", "-f", str(documents)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert kubectl.stdout is not None  # noqa: S101 - stdout=PIPE
        for line in kubectl.stdout:
            created[line.split()[0].rsplit("/", 1)[-1]] = time.monotonic()
        kubectl.wait()
    result = Result(created_in=time.monotonic() - start)

    def children_done() -> bool:
        return all(n in seen["Deployment"] and n in seen["Service"] for n in created)

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (
        children_done() and (len(ready) == count or not wait_ready)
    ):
        time.sleep(0.5)
    stop.set()
    result.latencies = [
        max(seen["Deployment"][n], seen["Service"][n]) - created[n]
        for n in created
        if n in seen["Deployment"] and n in seen["Service"]
    ]
    if len(result.latencies) < count:
        result.notes.append(f"only {len(result.latencies)} of {count} got children")
    if ready and len(ready) == count:
        result.all_ready = max(ready.values()) - start
    return result


def report(results: dict[str, list[Result]], count: int, work: Path, load: str) -> None:
    def med(who: str, value: Any) -> float:
        return statistics.median(value(r) for r in results[who])

    measures = [
        ("children exist, p50 (s)", lambda r: statistics.median(r.latencies), 1.0),
        ("children exist, p99 (s)", lambda r: percentile(r.latencies, 0.99), 2.0),
        ("all Ready, from first create (s)", lambda r: r.all_ready, 60.0),
        ("operator peak RSS (MB)", lambda r: r.rss_mb, 200.0),
    ]
    rounds = len(results["floor"])
    how = "16 client threads" if load == "threads" else "one kubectl apply --server-side"
    print(f"\n{count} ModelDeployments created at once ({how}); medians of {rounds}\n")
    print("| measure | mlops-operator | floor (bare watch + apply) | ours / floor | target | met |")
    print("|---|---:|---:|---:|---:|---|")
    for name, value, goal in measures:
        ours, floor = med("mlops-operator", value), med("floor", value)
        measured = not math.isnan(floor)
        ratio = f"{ours / floor:.2f}" if measured else "-"
        shown = f"{floor:.2f}" if measured else "-"
        met = "yes" if ours <= goal else "no"
        print(f"| {name} | {ours:.2f} | {shown} | {ratio} | <= {goal:g} | {met} |")
    print(f"\nlogs: {work}")


def operator_counts(port: int) -> list[str]:
    """Reconciles and API requests the operator made, from its own metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    notes = []
    for kind in ("ModelDeployment", "ModelDeploymentStatus"):
        count = sum(
            s.value
            for s in samples
            if s.name == "mlops_operator_reconcile_duration_seconds_count"
            and s.labels.get("kind") == kind
        )
        total = sum(
            s.value
            for s in samples
            if s.name == "mlops_operator_reconcile_duration_seconds_sum"
            and s.labels.get("kind") == kind
        )
        if count:
            notes.append(f"{kind} {count:.0f} reconciles, mean {1000 * total / count:.0f} ms")
    requests = {
        s.labels["method"]: s.value
        for s in samples
        if s.name == "mlops_operator_api_requests_total"
    }
    notes.append("API requests " + ", ".join(f"{m} {n:.0f}" for m, n in sorted(requests.items())))
    return notes


if __name__ == "__main__":
    sys.exit(main())
