"""Fetch a model artifact to local disk and verify its pinned digest.

Schemes: file://, pvc://claim/path (a volume mounted under the pvc root),
http(s)://, s3:// (boto3; endpoint and credentials from the usual AWS
variables). A download lands in a temporary file, is hashed while it streams,
and is moved into the cache only when the digest matches, so nothing unverified
is ever handed to a loader.
"""

import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

from .bundle import BundleError, unpack
from .digest import CHUNK, DIGEST_RE, DigestMismatchError, verify_file

SCHEMES = ("file", "pvc", "http", "https", "s3")


def local_path(uri: str, pvc_root: Path) -> Path | None:
    """The path of a file:// or pvc:// artifact; None for remote schemes."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme == "pvc":
        return pvc_root / parsed.netloc / parsed.path.lstrip("/")
    return None


def _open_remote(
    uri: str, token: str | None, s3_credentials: tuple[str, str] | None = None
) -> BinaryIO:
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        request = urllib.request.Request(uri)  # noqa: S310 - scheme checked above
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        response: BinaryIO = urllib.request.urlopen(request, timeout=60)  # noqa: S310
        return response
    if parsed.scheme == "s3":
        try:
            import boto3  # noqa: PLC0415
        except ImportError as error:
            raise BundleError("s3:// artifacts need boto3 (pip install boto3)") from error
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        keys = {}
        if s3_credentials:
            keys = {
                "aws_access_key_id": s3_credentials[0],
                "aws_secret_access_key": s3_credentials[1],
            }
        s3 = boto3.client("s3", endpoint_url=endpoint, **keys)
        body: BinaryIO = s3.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"]
        return body
    raise BundleError(f"artifact uri {uri!r}: unsupported scheme (use {', '.join(SCHEMES)})")


def remote_digest(
    uri: str, token: str | None = None, s3_credentials: tuple[str, str] | None = None
) -> tuple[str, int]:
    """sha256 digest and size of a remote artifact, streamed without keeping it."""
    sha = hashlib.sha256()
    size = 0
    with _open_remote(uri, token, s3_credentials) as source:
        while chunk := source.read(CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return f"sha256:{sha.hexdigest()}", size


def download(uri: str, digest: str, target: Path, token: str | None = None) -> Path:
    """Stream `uri` to `target`, verifying `digest` before the file appears there."""
    if not DIGEST_RE.match(digest):
        raise DigestMismatchError(f"artifact digest {digest!r} is not of the form sha256:<64 hex>")
    target.parent.mkdir(parents=True, exist_ok=True)
    sha = hashlib.sha256()
    with (
        _open_remote(uri, token) as source,
        tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as partial,
    ):
        while chunk := source.read(CHUNK):
            sha.update(chunk)
            partial.write(chunk)
    actual = f"sha256:{sha.hexdigest()}"
    if actual != digest:
        Path(partial.name).unlink()
        raise DigestMismatchError(
            f"artifact {uri}: digest {actual} does not match the pinned {digest}"
        )
    Path(partial.name).replace(target)
    return target


def materialize(
    uri: str, digest: str | None, cache: Path, pvc_root: Path, token: str | None = None
) -> Path:
    """A verified bundle directory for `uri`, fetched and unpacked as needed.

    The digest pins a tarball (or the bundle.json of a directory bundle);
    bundle.json then pins every other file, which bundle.open_bundle checks.
    """
    if digest is None:
        raise DigestMismatchError(f"artifact {uri}: no digest pinned; refusing to load it")
    path = local_path(uri, pvc_root)
    if path is None:
        path = cache / "artifacts" / digest.removeprefix("sha256:")
        if not path.exists():
            download(uri, digest, path, token)
    if not path.exists():
        raise BundleError(f"artifact {uri}: {path} does not exist")
    if path.is_dir():
        verify_file(path / "bundle.json", digest, f"artifact {uri} (bundle.json)")
        directory = path
    else:
        verify_file(path, digest, f"artifact {uri}")
        directory = cache / "bundles" / digest.removeprefix("sha256:")
        if not (directory / "bundle.json").exists():
            cache.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=cache))
            unpack(path, staging)
            shutil.rmtree(directory, ignore_errors=True)
            directory.parent.mkdir(parents=True, exist_ok=True)
            staging.replace(directory)
    return directory
