"""A real Prometheus server (Debian's) on loopback for the tests of the prometheus
sources. It scrapes the serving Services' endpoints in the test's namespace every
second at their pod IPs, labelled as a prometheus-operator ServiceMonitor labels
them (namespace, service, pod).

Debian builds Prometheus without Kubernetes service discovery, so the discovery is
done here, the way kubernetes_sd's endpointslice role does it: a thread reads the
namespace's EndpointSlices every second and writes the Ready endpoints of ports named
http to a file_sd file, which Prometheus watches."""

import json
import os
import shutil
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from .kube import Cluster, wait_until
from .processes import free_port


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, promql: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{query}", timeout=5) as answer:
            result: list[dict[str, Any]] = json.load(answer)["data"]["result"]
            return result


@pytest.fixture
def prometheus(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Prometheus]:
    """Prometheus on loopback, scraping the serving Services' endpoints in the test's
    namespace every second, with the labels a ServiceMonitor would give."""
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("MLOPS_REQUIRE_EXTRAS") == "1":
            pytest.fail("prometheus is not installed; hack/setup.sh installs it")
        pytest.skip("prometheus is not installed (hack/setup.sh installs it)")
    targets = tmp_path / "targets.json"
    targets.write_text("[]")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "serving",
                "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "1s"}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    stop = threading.Event()
    discovery = threading.Thread(
        target=discover, args=(cluster, namespace, targets, stop), daemon=True
    )
    try:
        wait_until(ready, "Prometheus to be ready", timeout=60)
        discovery.start()
        yield Prometheus(url)
    finally:
        stop.set()
        process.terminate()
        process.wait(timeout=30)
        log.close()


def discover(cluster: Cluster, namespace: str, targets: Path, stop: threading.Event) -> None:
    """Keep `targets` (file_sd) equal to the Ready endpoints of the namespace's ports
    named http, with the labels kubernetes_sd and a ServiceMonitor's relabelling give."""
    api = client.DiscoveryV1Api(cluster.api)
    written = ""
    while not stop.wait(1.0):
        found = []
        for piece in api.list_namespaced_endpoint_slice(namespace).items:
            service = (piece.metadata.labels or {}).get("kubernetes.io/service-name")
            ports = [p.port for p in piece.ports or [] if p.name == "http"]
            if not service or not ports:
                continue
            for endpoint in piece.endpoints or []:
                if endpoint.conditions and endpoint.conditions.ready is False:
                    continue
                pod = endpoint.target_ref.name if endpoint.target_ref else ""
                labels = {"namespace": namespace, "service": service, "pod": pod}
                found += [
                    {"targets": [f"{address}:{ports[0]}"], "labels": labels}
                    for address in endpoint.addresses
                ]
        text = json.dumps(sorted(found, key=json.dumps))
        if text != written:
            partial = targets.with_suffix(".partial")
            partial.write_text(text)
            partial.replace(targets)
            written = text
