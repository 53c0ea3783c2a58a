"""The model artifact in the pod: fetched and verified (mlops_contract.fetch), then
unpacked into the pod's private cache, from which alone it is loaded."""

import json
import shutil
import tempfile
from pathlib import Path

from mlops_contract.digest import DIGEST_RE, DigestMismatchError
from mlops_contract.fetch import DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT, download, local_path

from .bundle import MANIFEST, BundleError, unpack


def materialize(
    uri: str,
    digest: str | None,
    cache: Path,
    pvc_root: Path,
    credentials: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Path:
    """A verified bundle directory for `uri`, in the pod's private `cache`.

    Every artifact, local ones included, is copied into the cache and hashed as it
    is copied, and is used only from there: what was verified is what is loaded,
    even if a file on a shared volume changes between a check and a second read.
    The digest pins a tarball (or the bundle.json of a directory bundle); bundle.json
    then pins every other file, which bundle.open_bundle checks on the copy.
    """
    if digest is None:
        raise DigestMismatchError(f"artifact {uri}: no digest pinned; refusing to load it")
    if not DIGEST_RE.match(digest):
        raise DigestMismatchError(f"artifact digest {digest!r} is not of the form sha256:<64 hex>")
    path = local_path(uri, pvc_root)
    if path is not None and not path.exists():
        raise BundleError(f"artifact {uri}: {path} does not exist")
    directory = cache / "bundles" / digest.removeprefix("sha256:")
    if (directory / MANIFEST).exists():
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent))
    try:
        if path is not None and path.is_dir():
            _copy_bundle(uri, path, digest, staging, timeout=timeout, max_bytes=max_bytes)
        else:
            tarball = cache / "artifacts" / digest.removeprefix("sha256:")
            if not tarball.exists():
                download(uri, digest, tarball, credentials, timeout=timeout,
                         max_bytes=max_bytes, local=path)  # fmt: skip
            unpack(tarball, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(directory, ignore_errors=True)
    staging.replace(directory)
    return directory


def _copy_bundle(
    uri: str, source: Path, digest: str, into: Path, *, timeout: float, max_bytes: int
) -> None:
    """Copy a directory bundle: bundle.json checked against `digest` as it is copied,
    then each file it pins, checked against its own digest."""
    download(uri, digest, into / MANIFEST, timeout=timeout, max_bytes=max_bytes,
             local=source / MANIFEST)  # fmt: skip
    try:
        files = json.loads((into / MANIFEST).read_bytes())["files"]
        pinned = {str(name): str(file_digest) for name, file_digest in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise BundleError(f"{MANIFEST}: no files mapping of names to digests") from None
    for name, file_digest in pinned.items():
        if Path(name).name != name or name in {".", "..", MANIFEST}:
            raise BundleError(f"{MANIFEST}: files names {name!r}, not a file of the bundle")
        if not DIGEST_RE.match(file_digest):
            raise BundleError(f"{MANIFEST}: files[{name!r}] is not a sha256 digest")
        try:
            download(uri, file_digest, into / name, timeout=timeout, max_bytes=max_bytes,
                     local=source / name)  # fmt: skip
        except DigestMismatchError as error:
            raise DigestMismatchError(f"bundle file {name}: {error}") from None
