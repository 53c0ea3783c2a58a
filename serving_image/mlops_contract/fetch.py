"""Fetch a model artifact, within a deadline and a byte cap, and verify its pinned
digest: the serving pods download it (mlops_serving.artifacts), the operator hashes
it without keeping it (remote_digest).

Schemes: file://, pvc://claim/path (a volume mounted under the pvc root),
http(s)://, s3:// (boto3; endpoint and credentials from the usual AWS
variables). A download lands in a temporary file, is hashed while it streams,
and is moved into place only when the digest matches. Every failure is a
FetchError in words that never carry a credential.
"""

import configparser
import hashlib
import os
import socket
import ssl
import stat
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any, BinaryIO
from urllib.parse import urlparse

from .digest import CHUNK, DIGEST_RE, DigestMismatchError

SCHEMES = ("file", "pvc", "http", "https", "s3")


def local_path(uri: str, pvc_root: Path) -> Path | None:
    """The path of a file:// or pvc:// artifact; None for remote schemes."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme == "pvc":
        return pvc_root / parsed.netloc / parsed.path.lstrip("/")
    return None


DEFAULT_TIMEOUT = 300.0
"""Longest a whole fetch may take, in seconds: a server that drips a byte a minute
cannot hold a fetch (and whoever waits on it) for ever."""
DEFAULT_MAX_BYTES = 20 * 1024**3
"""Most bytes a fetch reads: a URI of endless data cannot fill the disk or the hash."""
READ_TIMEOUT = 60.0


class FetchError(Exception):
    """A fetch that failed, in words that never carry a credential or a server's own
    text: a fixed vocabulary, and the URI's scheme and host."""


def where(uri: str) -> str:
    """scheme://host of a URI: never its path or query, which may carry a token."""
    parsed = urlparse(uri)
    return f"{parsed.scheme}://{parsed.hostname or ''}"


VOCABULARY: tuple[tuple[type[BaseException], str], ...] = (
    (TimeoutError, "timed out"),
    (ConnectionRefusedError, "connection refused"),
    (ssl.SSLError, "TLS failed (is the server's certificate trusted?)"),
    (socket.gaierror, "host name not resolved"),
)


def describe(error: BaseException) -> str:
    """What went wrong, from a fixed vocabulary."""
    if isinstance(error, FetchError):
        return str(error)
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code}"
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
        return describe(error.reason)
    for kind, words in VOCABULARY:
        if isinstance(error, kind):
            return words
    return _s3_words(error) or (
        "network or file error"
        if isinstance(error, OSError)
        else f"failed ({type(error).__name__})"
    )


def _s3_words(error: BaseException) -> str | None:
    """botocore's errors, by their code (a word of AWS's) or class."""
    response = getattr(error, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    if isinstance(code, str) and code.isalnum():
        return f"S3 answered {code}"
    if type(error).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
        return "no usable S3 credentials"
    return None


def fetch_failure(uri: str, error: BaseException) -> FetchError:
    return FetchError(f"cannot fetch {where(uri)}: {describe(error)}")


S3_KEYS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")
"""The keys of an AWS credentials file that boto3's client takes; the first two required."""


def s3_keys(text: str) -> dict[str, str]:
    """The keys boto3 takes, from a Secret holding an AWS credentials file (its first
    profile, or bare key = value lines). The one parser of the operator and the pod."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text if text.lstrip().startswith("[") else f"[default]\n{text}")
    except configparser.Error:
        raise FetchError(
            "the credentials Secret is not an AWS credentials file "
            "(aws_access_key_id = ..., aws_secret_access_key = ...)"
        ) from None
    section = parser[parser.sections()[0]] if parser.sections() else parser["DEFAULT"]
    keys = {k: section[k] for k in S3_KEYS if section.get(k)}
    for required in S3_KEYS[:2]:
        if required not in keys:
            raise FetchError(f"the credentials Secret has no {required}")
    return keys


class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    """Follows redirects from https only to https. The credentials are added as an
    unredirected header, so urllib never forwards them to the next URL at all."""

    def redirect_request(  # noqa: PLR0917 - urllib's signature
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urlparse(req.full_url).scheme == "https" and urlparse(newurl).scheme != "https":
            raise FetchError(f"refused a redirect from https to {urlparse(newurl).scheme}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _open_remote(uri: str, credentials: str | None, timeout: float) -> BinaryIO:
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        request = urllib.request.Request(uri)  # noqa: S310 - scheme checked above
        if credentials:
            if parsed.scheme != "https":
                raise FetchError("credentials are sent over https only; the uri is http")
            token = credentials.strip()
            if not token or not token.isprintable():
                raise FetchError("the token in the credentials Secret is not one line of text")
            request.add_unredirected_header("Authorization", f"Bearer {token}")
        opener = urllib.request.build_opener(_NoDowngrade)
        response: BinaryIO = opener.open(request, timeout=min(timeout, READ_TIMEOUT))
        return response
    if parsed.scheme == "s3":
        try:
            import boto3  # noqa: PLC0415
            from botocore.config import Config  # noqa: PLC0415
        except ImportError as error:
            raise FetchError("s3:// artifacts need boto3 (pip install boto3)") from error
        keys = s3_keys(credentials) if credentials else {}
        limits = Config(connect_timeout=min(timeout, READ_TIMEOUT), read_timeout=READ_TIMEOUT)
        # botocore itself honours AWS_ENDPOINT_URL_S3 and AWS_ENDPOINT_URL (S3-compatible
        # stores such as MinIO), as every AWS SDK does.
        s3 = boto3.client("s3", config=limits, **keys)
        body: BinaryIO = s3.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"]
        return body
    raise FetchError(f"unsupported scheme {parsed.scheme!r} (use {', '.join(SCHEMES)})")


def _open_local(path: Path) -> BinaryIO:
    """A local artifact file, checked to be a regular file once opened (not before,
    which another writer could change in between)."""
    source = path.open("rb")
    if not stat.S_ISREG(os.fstat(source.fileno()).st_mode):
        source.close()
        raise FetchError(f"{path.name} is not a regular file")
    return source


def _stream(
    uri: str,
    credentials: str | None,
    sink: IO[bytes] | None,
    timeout: float,
    max_bytes: int,
    *,
    local: Path | None = None,
) -> tuple[str, int]:
    """Read `uri` (or the file `local` that it names) to its end within the deadline
    and the byte cap, hashing (and writing to `sink`) as it streams; failures as
    FetchError."""
    deadline = time.monotonic() + timeout
    sha = hashlib.sha256()
    size = 0
    try:
        with _open_local(local) if local else _open_remote(uri, credentials, timeout) as source:
            # read() waits for a whole chunk, which a server dripping a byte at a time
            # never completes; read1() returns what one receive brings (http). An s3
            # endpoint is the operator's own setting, not a ModelVersion author's.
            read = getattr(source, "read1", source.read)
            while chunk := read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise FetchError(f"larger than {max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise FetchError(f"took longer than {timeout:g} s")
                sha.update(chunk)
                if sink is not None:
                    sink.write(chunk)
    except Exception as error:  # noqa: BLE001 - every failure, in safe words
        raise fetch_failure(uri, error) from None
    return f"sha256:{sha.hexdigest()}", size


def remote_digest(
    uri: str,
    credentials: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> tuple[str, int]:
    """sha256 digest and size of a remote artifact, streamed without keeping it."""
    return _stream(uri, credentials, None, timeout, max_bytes)


def download(
    uri: str,
    digest: str,
    target: Path,
    credentials: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
    local: Path | None = None,
) -> Path:
    """Stream `uri` (or the local file it names) to `target`, verifying `digest` before
    the file appears there; a failed or refused download leaves nothing behind."""
    if not DIGEST_RE.match(digest):
        raise DigestMismatchError(f"artifact digest {digest!r} is not of the form sha256:<64 hex>")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as partial:
        try:
            actual, _ = _stream(uri, credentials, partial, timeout, max_bytes, local=local)
        except BaseException:
            Path(partial.name).unlink(missing_ok=True)
            raise
    if actual != digest:
        Path(partial.name).unlink()
        raise DigestMismatchError(
            f"artifact {uri}: digest {actual} does not match the pinned {digest}"
        )
    Path(partial.name).replace(target)
    return target
