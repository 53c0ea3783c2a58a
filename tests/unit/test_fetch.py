"""Artifacts over http(s) (with a bearer token) and s3, from real servers on loopback."""

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops_serving.bundle import open_bundle
from mlops_serving.digest import DigestMismatchError
from mlops_serving.fetch import materialize

from .conftest import BuiltBundle


@pytest.fixture
def http_server(iris_bundle: BuiltBundle) -> Iterator[str]:
    body = iris_bundle.path.read_bytes()
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            if self.headers.get("Authorization") != "Bearer t0ken":
                self.send_error(403)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/iris.tar.gz"
    server.shutdown()
    assert seen


def test_http_artifact_with_token_is_verified_and_cached(
    http_server: str, iris_bundle: BuiltBundle, tmp_path: Path
) -> None:
    directory = materialize(
        http_server, iris_bundle.digest, tmp_path / "cache", tmp_path, token="t0ken"
    )
    assert open_bundle(directory)[0].name == "iris"
    cached = tmp_path / "cache" / "artifacts" / iris_bundle.digest.removeprefix("sha256:")
    assert cached.read_bytes() == iris_bundle.path.read_bytes()


def test_http_artifact_with_wrong_digest_never_lands(http_server: str, tmp_path: Path) -> None:
    wrong = "sha256:" + "1" * 64
    with pytest.raises(DigestMismatchError, match="does not match the pinned"):
        materialize(http_server, wrong, tmp_path / "cache", tmp_path, token="t0ken")
    assert list((tmp_path / "cache" / "artifacts").iterdir()) == []


def test_s3_artifact_from_a_local_s3_server(
    iris_bundle: BuiltBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        for key, value in {
            "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(key, value)
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="models")
        s3.put_object(Bucket="models", Key="iris/1.tar.gz", Body=iris_bundle.path.read_bytes())
        directory = materialize(
            "s3://models/iris/1.tar.gz", iris_bundle.digest, tmp_path / "cache", tmp_path
        )
        assert open_bundle(directory)[0].version == "1"
    finally:
        server.stop()
