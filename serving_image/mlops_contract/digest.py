"""sha256 digests in the `sha256:<hex>` form used by ModelVersion and bundles."""

import hashlib
import re
from pathlib import Path

DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
CHUNK = 1 << 20


class DigestMismatchError(Exception):
    """An artifact's content does not hash to its pinned digest."""


def file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            sha.update(chunk)
    return f"sha256:{sha.hexdigest()}"


def verify_file(path: Path, expected: str, what: str) -> None:
    """Raise unless `path` hashes to `expected`; call before anything reads the file."""
    if not DIGEST_RE.match(expected):
        raise DigestMismatchError(f"{what}: {expected!r} is not of the form sha256:<64 hex>")
    actual = file_digest(path)
    if actual != expected:
        raise DigestMismatchError(f"{what}: digest {actual} does not match the pinned {expected}")
