"""Model bundles: a model file, bundle.json and profile.json, as a directory or tarball.

bundle.json pins the sha256 of every other file, so verifying one digest (the
tarball's, or bundle.json's for a directory) verifies the whole bundle before
any model file is deserialized.
"""

import json
import shutil
import tarfile
from pathlib import Path
from typing import Any, Literal

from mlops_contract.digest import verify_file
from mlops_contract.profile import Profile
from pydantic import BaseModel, Field

MANIFEST = "bundle.json"
PROFILE = "profile.json"

Framework = Literal["sklearn", "pytorch", "onnx"]
Format = Literal["joblib", "pickle", "skops", "torchscript", "torch-export", "onnx"]


class BundleError(Exception):
    """A bundle is missing a file, malformed, or fails verification."""


class Tensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class Signature(BaseModel):
    inputs: list[Tensor]
    outputs: list[Tensor]


class Lineage(BaseModel):
    run_id: str | None = Field(default=None, alias="runId")
    experiment: str | None = None
    tracking_uri: str | None = Field(default=None, alias="trackingUri")
    git_commit: str | None = Field(default=None, alias="gitCommit")
    dataset_uri: str | None = Field(default=None, alias="datasetUri")
    dataset_digest: str | None = Field(default=None, alias="datasetDigest")

    model_config = {"populate_by_name": True}


class Manifest(BaseModel):
    """bundle.json."""

    api_version: Literal["mlops.dev/bundle/v1"] = Field(
        default="mlops.dev/bundle/v1", alias="apiVersion"
    )
    name: str
    version: str
    framework: Framework
    format: Format
    model_file: str = Field(alias="modelFile")
    task: Literal["classification", "regression", "other"]
    features: list[str]
    classes: list[Any] = Field(default_factory=list)
    signature: Signature
    files: dict[str, str]
    """sha256 digest of every other file in the bundle, by name."""
    libraries: dict[str, str] = Field(default_factory=dict)
    lineage: Lineage | None = None
    created: str | None = None
    """When the model was made, if the builder says: never the build's own time, which
    would make two builds of the same model differ."""

    model_config = {"populate_by_name": True}


MAX_MEMBERS = 16
"""A bundle has three files; a tarball of more entries is not one (and listing a million
of them would fill the memory)."""
MAX_UNPACKED_BYTES = 20 * 1024**3
"""Most bytes a bundle unpacks to: a small tarball of zeros can claim terabytes."""


def unpack(archive: Path, into: Path, max_bytes: int = MAX_UNPACKED_BYTES) -> Path:
    """Extract a bundle tarball safely: a few regular files at the top level, within
    `max_bytes` in all. Each entry's size is its header's, checked before it is written."""
    into.mkdir(parents=True, exist_ok=True)
    unpacked = 0
    with tarfile.open(archive, "r:*") as tar:
        for count, member in enumerate(tar, start=1):
            if count > MAX_MEMBERS:
                raise BundleError(f"bundle {archive.name}: more than {MAX_MEMBERS} entries")
            if (
                not member.isfile()
                or "/" in member.name.strip("./")
                or member.name.startswith("..")
            ):
                raise BundleError(f"bundle {archive.name}: unexpected entry {member.name!r}")
            unpacked += member.size
            if unpacked > max_bytes:
                raise BundleError(f"bundle {archive.name}: unpacks to more than {max_bytes} bytes")
            source = tar.extractfile(member)
            if source is None:
                raise BundleError(f"bundle {archive.name}: cannot read {member.name!r}")
            with source, (into / Path(member.name).name).open("wb") as target:
                shutil.copyfileobj(source, target)
    return into


def open_bundle(directory: Path) -> tuple[Manifest, Profile]:
    """Read bundle.json and check every file it pins, before anything is deserialized."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{directory}: no {MANIFEST}; is this a bundle?")
    try:
        manifest = Manifest.model_validate_json(manifest_path.read_bytes())
    except ValueError as error:
        raise BundleError(f"{manifest_path}: invalid bundle manifest: {error}") from error
    for file_name in (manifest.model_file, PROFILE):
        if file_name not in manifest.files:
            raise BundleError(f"{MANIFEST}: files has no digest for {file_name}")
    for file_name, digest in manifest.files.items():
        path = directory / file_name
        if not path.is_file():
            raise BundleError(f"{directory}: {file_name} is missing")
        verify_file(path, digest, f"bundle file {file_name}")
    profile = Profile.model_validate(json.loads((directory / PROFILE).read_bytes()))
    return manifest, profile
