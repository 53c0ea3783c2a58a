"""Canaries on the real node: the versions they roll out, callers in the background,
and what the operator and the router say of them."""

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from kubernetes import client
from mlops_contract.digest import file_digest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from mlops_serving import packing

from .kube import IMAGE, Cluster, wait_until
from .objects import absent_as_none, model_deployment
from .operator_fixture import get

SETOSA = [5.1, 3.5, 1.4, 0.2]
BROKEN = [-5.1, 3.5, 1.4, 0.2]  # the faulty model's square root makes it NaN: a 500


def faulty_bundle(out: Path) -> tuple[Path, str]:
    """An iris model that fails on rows with a negative feature (sqrt gives NaN, and
    the classifier refuses NaN): a model bug that only some traffic hits."""
    frame, target = load_iris(return_X_y=True, as_frame=True)
    model = make_pipeline(FunctionTransformer(np.sqrt), LogisticRegression(max_iter=500))
    model.fit(frame.to_numpy(), target)
    packing.build(model, frame, out, name="iris", version="3")
    return out, file_digest(out)


def entry_ip(cluster: Cluster, namespace: str, name: str) -> str | None:
    read = client.CoreV1Api(cluster.api).read_namespaced_service
    service = absent_as_none(read, name, namespace)
    return str(service.spec.cluster_ip) if service else None


def post(
    url: str, row: list[float], headers: dict[str, str] | None = None
) -> tuple[int, str | None]:
    """A prediction; its status and the track that served it (the router's header).
    The body of a 502 or 503, which names the router's upstream error, is printed:
    pytest shows it with a failure."""
    request = urllib.request.Request(
        f"{url}/predict",
        data=json.dumps({"features": row}).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()
            return answer.status, answer.headers.get("x-mlops-track")
    except urllib.error.HTTPError as error:
        body = error.read()
        if error.code in (502, 503):
            print(f"HTTP {error.code} from {url}: {body[:500]!r}")
        return error.code, error.headers.get("x-mlops-track")
    except OSError:
        return 0, None


class Traffic:
    """Callers in the background, through the entry Service: every third row is one the
    faulty model fails on. Keeps what answered."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: Counter[tuple[int, str | None]] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            self.answers[post(self.url, BROKEN if i % 3 == 0 else SETOSA)] += 1
            i += 1
            time.sleep(0.02)

    def __enter__(self) -> "Traffic":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def canary_status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return (get(cluster, "modeldeployments", namespace, name).get("status") or {}).get(
        "canary"
    ) or {}


def canary_reaches(cluster: Cluster, namespace: str, phase: str, what: str) -> dict[str, Any]:
    """status.canary of iris once its phase is `phase`."""

    def reached() -> dict[str, Any] | None:
        status = canary_status(cluster, namespace, "iris")
        return status if status.get("phase") == phase else None

    return wait_until(reached, what, timeout=240, interval=0.5)


def router_table(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    """The table one of the router's pods has in force ({} while none answers)."""
    pods = client.CoreV1Api(cluster.api).list_namespaced_pod(
        namespace, label_selector=f"mlops.dev/deployment={name},mlops.dev/track=router"
    )
    for pod in pods.items:
        if pod.status.pod_ip:
            try:
                with urllib.request.urlopen(
                    f"http://{pod.status.pod_ip}:8080/router/table", timeout=5
                ) as answer:
                    table: dict[str, Any] = json.load(answer)
                    return table
            except (OSError, ValueError):
                continue
    return {}


def router_weight(cluster: Cluster, namespace: str, name: str) -> int | None:
    """The canary weight the router has in force."""
    weight = router_table(cluster, namespace, name).get("canaryWeight")
    return None if weight is None else int(weight)


def on_real_node(name: str, **spec: Any) -> dict[str, Any]:
    return model_deployment(name, image=IMAGE, scheduling={}, **spec)
