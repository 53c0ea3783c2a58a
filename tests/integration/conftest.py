"""Session fixtures for tests against a real control plane.

The cluster comes from, in order: MLOPS_TEST_KUBECONFIG (an existing cluster or
kind), a running local plane (hack/cluster.sh), or a local plane started here
and stopped afterwards. Without one the tests skip, unless
MLOPS_REQUIRE_CLUSTER=1 (as in CI), where they fail.
"""

import functools
import http.server
import ipaddress
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from mlops_operator.api import RESOURCES
from mlops_operator.constants import GROUP

from .kube import (
    REAL_NODE,
    ROOT,
    Bridge,
    Cluster,
    cluster_required,
    iris_bundle,
    namespace_name,
    wait_until,
)
from .objects import create, model_version
from .operator_fixture import operator, sole_operator  # noqa: F401 - shared fixtures
from .prometheus import prometheus  # noqa: F401 - a shared fixture
from .rollouts import faulty_bundle

CLUSTER_SH = ROOT / "hack" / "cluster.sh"


def _hack(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(CLUSTER_SH), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _unavailable(reason: str) -> None:
    if cluster_required():
        pytest.fail(f"MLOPS_REQUIRE_CLUSTER=1 but no cluster: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    external = os.environ.get("MLOPS_TEST_KUBECONFIG")
    started = False
    if external:
        kubeconfig, bin_dir, local = Path(external), None, False
    else:
        if _hack("status").returncode != 0:
            if shutil.which("go") is None:
                _unavailable("no running local plane and no Go to build one (see hack/cluster.sh)")
            up = _hack("up", timeout=3600)
            if up.returncode != 0:
                _unavailable(f"hack/cluster.sh up failed:\n{up.stderr[-3000:]}")
            started = True
        kubeconfig = Path(_hack("kubeconfig").stdout.strip())
        bin_dir, local = Path(_hack("bin").stdout.strip()), True
    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        client.VersionApi(api).get_code()
    except Exception as error:  # noqa: BLE001 - whatever failed, the cluster is unusable
        _unavailable(f"cluster at {kubeconfig} does not answer: {error}")
    yield Cluster(kubeconfig=kubeconfig, bin_dir=bin_dir, local=local, api=api)
    api.close()
    if started:
        _hack("down", timeout=120)


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    name = namespace_name(request.node.name)
    core = client.CoreV1Api(cluster.api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_until(
        lambda: (
            core.list_namespaced_service_account(name, field_selector="metadata.name=default").items
        ),
        f"the default ServiceAccount in {name}",
    )
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    for resource in RESOURCES:
        cluster.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s",
            f"crd/{resource.plural}.{GROUP}",
        )  # fmt: skip


def _no_real_node(reason: str) -> None:
    if os.environ.get("MLOPS_REQUIRE_REAL_NODE") == "1":
        pytest.fail(f"MLOPS_REQUIRE_REAL_NODE=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def bridge(cluster: Cluster) -> Bridge:
    """The real node's network. On the local plane the node is this machine, on the
    plane's bridge; elsewhere (kind: hack/kind-e2e.sh) MLOPS_TEST_POD_NETWORK and
    MLOPS_TEST_HOST_IP say where its pods live and how they reach this machine. Tests
    that need pods that really run take it; without a real node they skip, unless
    MLOPS_REQUIRE_REAL_NODE=1 (CI)."""
    try:
        node = client.CoreV1Api(cluster.api).read_node(REAL_NODE)
    except ApiException as error:
        _no_real_node(f"no real node {REAL_NODE} ({error.reason}): hack/cluster.sh up starts one")
    ready = [c for c in node.status.conditions or [] if c.type == "Ready"]
    if not ready or ready[0].status != "True":
        _no_real_node(f"the real node {REAL_NODE} is not Ready")
    (address,) = [a.address for a in node.status.addresses if a.type == "InternalIP"]
    pods = os.environ.get("MLOPS_TEST_POD_NETWORK", f"{address}/24")
    host = os.environ.get("MLOPS_TEST_HOST_IP", address)
    return Bridge(ipaddress.IPv4Network(pods, strict=False), ipaddress.IPv4Address(host))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_: Any) -> None:
        return


@pytest.fixture(scope="session")
def store(bridge: Bridge, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """An artifact store: a folder served over HTTP on the bridge, where the operator
    and the real node's pods fetch from. The folder, and its base URL."""
    folder = tmp_path_factory.mktemp("store")
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer((str(bridge.host), 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://{bridge.host}:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="session")
def artifact(store: tuple[Path, str]) -> tuple[str, str]:
    """A real iris bundle in the store: its URI and digest."""
    folder, base = store
    _, digest = iris_bundle(folder / "iris-1.tar.gz")
    return f"{base}/iris-1.tar.gz", digest


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """Two real iris bundles (versions 1 and 2) on this machine's disk."""
    return {
        version: iris_bundle(
            tmp_path_factory.mktemp("bundles") / f"iris-{version}.tar.gz", version, c
        )
        for version, c in (("1", 1.0), ("2", 0.1))
    }


@pytest.fixture
def versions(
    cluster: Cluster, namespace: str, store: tuple[Path, str], artifact: tuple[str, str]
) -> str:
    """iris-1 (stable), iris-2 (a good canary) and iris-3 (a faulty one), served to the
    pods from the store on the bridge."""
    folder, base = store
    builds = {
        "1": (Path(), artifact[1]),
        "2": iris_bundle(folder / "iris-2.tar.gz", version="2", c=0.5),
        "3": faulty_bundle(folder / "iris-3.tar.gz"),
    }
    for number, built in builds.items():
        uri = artifact[0] if number == "1" else f"{base}/iris-{number}.tar.gz"
        create(cluster, namespace, "modelversions", model_version(number, built, uri=uri))
    return namespace
