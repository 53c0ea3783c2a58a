"""Artifacts over https (with a bearer token) and s3, from real servers on loopback,
and every way a fetch can be turned against its caller: credentials sent in clear,
forwarded on a redirect or quoted in an error; a server that drips or never ends."""

import http.server
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mlops_contract.digest import DigestMismatchError
from mlops_contract.fetch import FetchError, remote_digest, s3_keys

from mlops_serving.artifacts import materialize
from mlops_serving.bundle import open_bundle

from .conftest import BuiltBundle

TOKEN = "t0ken"
Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, and its key."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def serve(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[Handler, bool], str]]:
    """Start servers on loopback (https, trusted through SSL_CERT_FILE, or plain http)
    whose GET runs the handler given; their base URLs."""
    cert, key = certificate
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(handle: Handler, tls: bool = True) -> str:
        class Quiet(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                handle(self)

            def log_message(self, *_: object) -> None:
                return

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
        server.daemon_threads = True
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()


def guarded(body: bytes, seen: list[str]) -> Handler:
    """Answer `body` to the bearer TOKEN, 403 to anyone else; record what was sent."""

    def handle(request: http.server.BaseHTTPRequestHandler) -> None:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            request.send_error(403, f"no; you sent {request.headers.get('Authorization')}")
            return
        request.send_response(200)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    return handle


def test_https_artifact_with_token_is_verified_and_cached(
    serve: Callable[[Handler, bool], str], iris_bundle: BuiltBundle, tmp_path: Path
) -> None:
    seen: list[str] = []
    base = serve(guarded(iris_bundle.path.read_bytes(), seen), True)
    directory = materialize(
        f"{base}/iris.tar.gz", iris_bundle.digest, tmp_path / "cache", tmp_path, TOKEN
    )
    assert open_bundle(directory)[0].name == "iris"
    cached = tmp_path / "cache" / "artifacts" / iris_bundle.digest.removeprefix("sha256:")
    assert cached.read_bytes() == iris_bundle.path.read_bytes()
    assert seen == [f"Bearer {TOKEN}"]


def test_wrong_digest_or_failed_download_never_lands(
    serve: Callable[[Handler, bool], str], iris_bundle: BuiltBundle, tmp_path: Path
) -> None:
    base = serve(guarded(iris_bundle.path.read_bytes(), []), True)
    wrong = "sha256:" + "1" * 64
    with pytest.raises(DigestMismatchError, match="does not match the pinned"):
        materialize(f"{base}/iris.tar.gz", wrong, tmp_path / "cache", tmp_path, TOKEN)
    with pytest.raises(FetchError, match="HTTP 403"):
        materialize(f"{base}/iris.tar.gz", wrong, tmp_path / "cache", tmp_path, "other")
    assert list((tmp_path / "cache" / "artifacts").iterdir()) == []


def test_credentials_are_never_sent_over_http(
    serve: Callable[[Handler, bool], str], iris_bundle: BuiltBundle
) -> None:
    seen: list[str] = []
    base = serve(guarded(iris_bundle.path.read_bytes(), seen), False)
    with pytest.raises(FetchError, match="over https only"):
        remote_digest(f"{base}/iris.tar.gz", TOKEN)
    assert seen == []


def test_a_redirect_gets_no_credentials_and_never_leaves_https(
    serve: Callable[[Handler, bool], str], iris_bundle: BuiltBundle
) -> None:
    body = iris_bundle.path.read_bytes()
    elsewhere: list[str] = []

    def anyone(request: http.server.BaseHTTPRequestHandler) -> None:
        elsewhere.append(request.headers.get("Authorization", ""))
        request.send_response(200)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    other_https, other_http = serve(anyone, True), serve(anyone, False)

    def redirect_to(target: str) -> Handler:
        def handle(request: http.server.BaseHTTPRequestHandler) -> None:
            request.send_response(302)
            request.send_header("Location", f"{target}/stolen")
            request.send_header("Content-Length", "0")
            request.end_headers()

        return handle

    digest, _ = remote_digest(f"{serve(redirect_to(other_https), True)}/iris.tar.gz", TOKEN)
    assert digest == iris_bundle.digest
    assert elsewhere == [""]  # followed, without the token
    with pytest.raises(FetchError, match="refused a redirect from https to http"):
        remote_digest(f"{serve(redirect_to(other_http), True)}/iris.tar.gz", TOKEN)
    assert elsewhere == [""]


def test_failures_carry_no_secret_and_no_server_text(
    serve: Callable[[Handler, bool], str], iris_bundle: BuiltBundle
) -> None:
    base = serve(guarded(iris_bundle.path.read_bytes(), []), True)
    key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
    for credentials, words in (
        ("wrong-token-9f8e7d", "cannot fetch https://127.0.0.1: HTTP 403"),
        (key, "not one line of text"),
    ):
        with pytest.raises(FetchError) as failed:
            remote_digest(f"{base}/iris.tar.gz?sig=abc123", credentials)
        message = str(failed.value)
        assert words in message
        for secret in ("wrong-token-9f8e7d", "MIIEvQ", "BEGIN", "abc123", "you sent"):
            assert secret not in message
        # Nothing chained either: a logged traceback shows this message alone.
        assert failed.value.__cause__ is None
        assert failed.value.__suppress_context__


def test_a_dripping_server_meets_the_deadline(serve: Callable[[Handler, bool], str]) -> None:
    def drip(request: http.server.BaseHTTPRequestHandler) -> None:
        request.send_response(200)
        request.end_headers()
        try:
            while True:
                request.wfile.write(b"x")
                request.wfile.flush()
                time.sleep(0.2)
        except OSError:
            return

    base = serve(drip, True)
    started = time.monotonic()
    with pytest.raises(FetchError, match="took longer than 1 s"):
        remote_digest(f"{base}/slow", timeout=1)
    assert time.monotonic() - started < 10


def test_an_endless_artifact_meets_the_byte_cap(serve: Callable[[Handler, bool], str]) -> None:
    def endless(request: http.server.BaseHTTPRequestHandler) -> None:
        request.send_response(200)
        request.end_headers()
        chunk = b"\0" * 65536
        try:
            while True:
                request.wfile.write(chunk)
        except OSError:
            return

    base = serve(endless, True)
    with pytest.raises(FetchError, match="larger than 1000000 bytes"):
        remote_digest(f"{base}/zero", max_bytes=1_000_000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[default]\naws_access_key_id = AK\naws_secret_access_key = SK\n",
         {"aws_access_key_id": "AK", "aws_secret_access_key": "SK"}),
        ("[ci]\naws_access_key_id=AK\naws_secret_access_key=SK\naws_session_token=ST\n",
         {"aws_access_key_id": "AK", "aws_secret_access_key": "SK", "aws_session_token": "ST"}),
        ("aws_access_key_id = AK\naws_secret_access_key = SK\n",
         {"aws_access_key_id": "AK", "aws_secret_access_key": "SK"}),
    ],
)  # fmt: skip
def test_s3_credentials_are_read_as_boto3_reads_them(text: str, expected: dict[str, str]) -> None:
    assert s3_keys(text) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN\n", "not an AWS credentials file"),
        ("[default]\naws_access_key_id = AKIA-SECRET-1\n", "no aws_secret_access_key"),
        ("[default]\naws_secret_access_key = SECRET-2\n", "no aws_access_key_id"),
    ],
)
def test_bad_s3_credentials_are_named_not_quoted(text: str, words: str) -> None:
    with pytest.raises(FetchError, match=words) as failed:
        s3_keys(text)
    for secret in ("MIIEvQ", "BEGIN", "AKIA-SECRET-1", "SECRET-2"):
        assert secret not in str(failed.value)


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
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(variable, raising=False)
        keys = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
        s3 = boto3.client("s3", endpoint_url=endpoint, **keys)
        s3.create_bucket(Bucket="models")
        s3.put_object(Bucket="models", Key="iris/1.tar.gz", Body=iris_bundle.path.read_bytes())
        credentials = "[default]\naws_access_key_id = test\naws_secret_access_key = test\n"
        directory = materialize(
            "s3://models/iris/1.tar.gz", iris_bundle.digest, tmp_path / "cache", tmp_path,
            credentials,
        )  # fmt: skip
        assert open_bundle(directory)[0].version == "1"
        with pytest.raises(FetchError, match="S3 answered NoSuchKey"):
            remote_digest("s3://models/iris/2.tar.gz", credentials)
    finally:
        server.stop()
