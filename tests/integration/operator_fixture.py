"""The operator as a real process against the cluster, and the objects tests give it."""

import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from mlops_operator.constants import GROUP, VERSION

from .kube import Cluster, wait_until
from .processes import free_port


@dataclass
class Operator:
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]
    metrics_port: int
    liveness_port: int

    def logs(self) -> str:
        return self.log.read_text()[-5000:]

    def spawn(self) -> None:
        """Start the process (again), with the same settings and ports."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlops_operator.cli", "--log-format", "plain"],
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )

    def alive(self) -> bool:
        return self.health() == 200

    def health(self) -> int | None:
        """The status code of /healthz; None while nothing answers."""
        assert self.process.poll() is None, self.logs()
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2
            ) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as error:
            return int(error.code)
        except OSError:
            return None

    def kill(self) -> None:
        """SIGKILL: no clean-up, no finished handlers, as when a node dies."""
        self.process.kill()
        self.process.wait(timeout=10)


def start_operator(
    cluster: Cluster, directory: Path, *, wait: bool = True, **extra: str
) -> Operator:
    directory.mkdir(parents=True, exist_ok=True)
    liveness, metrics = free_port(), free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "MLOPS_LIVENESS_PORT": str(liveness),
        "MLOPS_METRICS_PORT": str(metrics),
        "MLOPS_RESYNC_SECONDS": "10",
        # The tests' file:// bundles live in pytest's temporary folders.
        "MLOPS_FILE_ARTIFACT_ROOT": tempfile.gettempdir(),
        "MLOPS_SERVING_IMAGE": "registry.example/mlops-serving:test",
        # kwok's pods get addresses where nothing listens: a DriftMonitor reading
        # pods (as the sample does) may dial loopback and the real node's pods only.
        "MLOPS_POD_NETWORKS": json.dumps(
            ["127.0.0.0/8", os.environ.get("MLOPS_TEST_POD_NETWORK", "10.245.0.0/24")]
        ),
        **extra,
    }
    operator = Operator(
        subprocess.Popen(["true"]), directory / "operator.log", env, metrics, liveness
    )
    operator.spawn()
    if wait:
        wait_until(operator.alive, "the operator's liveness endpoint", timeout=60)
    return operator


def stop_operator(operator: Operator) -> None:
    operator.process.terminate()
    try:
        operator.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        operator.process.kill()


SESSION: list[Operator] = []  # the session's operator, once a test has started it


@pytest.fixture(scope="session")
def operator(
    cluster: Cluster, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    running = start_operator(cluster, tmp_path_factory.mktemp("operator"))
    SESSION.append(running)
    yield running
    SESSION.remove(running)
    stop_operator(running)


@pytest.fixture
def sole_operator(cluster: Cluster) -> Iterator[None]:
    """For tests that run an operator of their own: the session's operator (which
    watches the whole cluster) is stopped, and started again afterwards."""
    paused = list(SESSION)
    for running in paused:
        stop_operator(running)
    yield
    for running in paused:
        running.spawn()
        wait_until(running.alive, "the session's operator to be back", timeout=60)


def custom(cluster: Cluster) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(cluster.api)


def get(cluster: Cluster, plural: str, namespace: str, name: str) -> dict[str, Any]:
    found: Any = custom(cluster).get_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, name
    )
    return dict(found)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for item in (obj.get("status") or {}).get("conditions", []):
        if item["type"] == kind:
            return dict(item)
    return None
