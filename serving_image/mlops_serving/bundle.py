"""Model bundles: a model file, bundle.json and profile.json, as a directory or tarball.

bundle.json pins the sha256 of every other file, so verifying one digest (the
tarball's, or bundle.json's for a directory) verifies the whole bundle before
any model file is deserialized.
"""

import gzip
import json
import platform
import shutil
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from mlops_contract.digest import file_digest, verify_file
from mlops_contract.profile import NUMERIC_BINS, SAMPLE_SIZE, Profile, build_profile
from pydantic import BaseModel, Field

MANIFEST = "bundle.json"
PROFILE = "profile.json"

Framework = Literal["sklearn", "pytorch", "onnx"]
Format = Literal["joblib", "pickle", "skops", "torchscript", "torch-export", "onnx"]
MODEL_FILES: dict[str, str] = {
    "joblib": "model.joblib",
    "pickle": "model.pkl",
    "skops": "model.skops",
    "torchscript": "model.pt",
    "torch-export": "model.pt2",
    "onnx": "model.onnx",
}
DEFAULT_FORMATS: dict[Framework, Format] = {
    "sklearn": "joblib",
    "pytorch": "torch-export",
    "onnx": "onnx",
}
DATATYPES = {"f": "FP64", "i": "INT64", "u": "UINT64", "b": "BOOL", "O": "BYTES", "U": "BYTES"}


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


def _datatype(values: npt.NDArray[Any]) -> str:
    return DATATYPES.get(values.dtype.kind, "BYTES")


def library_versions(*names: str) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def read_reference(path: Path) -> dict[str, npt.NDArray[Any]]:
    """Columns of reference data from CSV, Parquet or NPZ (one array per column)."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    import pandas as pd  # noqa: PLC0415 - only the bundle builder needs pandas

    if suffix == ".csv":
        frame = pd.read_csv(path)
    elif suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    else:
        raise BundleError(
            f"reference data {path}: unsupported format {suffix!r} (csv, parquet, npz)"
        )
    return {str(c): frame[c].to_numpy() for c in frame.columns}


def columns_of(reference: Any) -> dict[str, npt.NDArray[Any]]:
    """Named columns from a DataFrame, a mapping of arrays, or a 2-D array."""
    if hasattr(reference, "columns") and hasattr(reference, "to_numpy"):
        return {str(c): reference[c].to_numpy() for c in reference.columns}
    if isinstance(reference, Mapping):
        return {str(k): np.asarray(v) for k, v in reference.items()}
    array = np.asarray(reference)
    if array.ndim != 2:
        raise BundleError("reference data must be 2-D: rows by features")
    return {f"f{i}": array[:, i] for i in range(array.shape[1])}


def matrix(columns: Mapping[str, npt.NDArray[Any]]) -> npt.NDArray[Any]:
    stacked = np.column_stack(list(columns.values()))
    return stacked.astype(np.float64) if stacked.dtype.kind in "iufb" else stacked


def build(
    model: Any,
    reference: Any,
    out: Path,
    *,
    name: str,
    version: str,
    framework: Framework | None = None,
    format: Format | None = None,
    lineage: Lineage | None = None,
    tarball: bool | None = None,
    profile_bins: int = NUMERIC_BINS,
    profile_sample: int = SAMPLE_SIZE,
    created: str | None = None,
) -> Path:
    """Write a bundle for `model` with the profile of `reference` (and of its predictions).

    `model` is a fitted scikit-learn estimator, a torch module, or a path to an
    ONNX file. `out` ending in .tar.gz (or `tarball=True`) writes a tarball.
    `profile_bins` and `profile_sample` size each numeric feature's reference in
    profile.json (see mlops_contract.profile).
    """
    from .loaders import save_model  # noqa: PLC0415 - loaders import heavy frameworks lazily

    columns = columns_of(reference)
    framework = framework or _framework_of(model)
    chosen: Format = format or DEFAULT_FORMATS[framework]
    tarball = out.name.endswith((".tar.gz", ".tgz")) if tarball is None else tarball
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp)
        model_file = MODEL_FILES[chosen]
        features = matrix(columns)
        loaded, libraries = save_model(model, framework, chosen, staging / model_file, features)
        outputs = loaded.predict(features)
        prediction = outputs.primary
        profile = build_profile(columns, prediction, bins=profile_bins, sample_size=profile_sample)
        (staging / PROFILE).write_text(profile.model_dump_json())
        manifest = Manifest(
            name=name,
            version=version,
            framework=framework,
            format=chosen,
            model_file=model_file,
            task=loaded.task,
            features=list(columns),
            classes=loaded.classes,
            signature=Signature(
                inputs=[
                    Tensor(name=c, datatype=_datatype(v), shape=[-1]) for c, v in columns.items()
                ],
                outputs=[
                    Tensor(name=k, datatype=_datatype(v), shape=[-1, *v.shape[1:]])
                    for k, v in outputs.tensors.items()
                ],
            ),
            files={f: file_digest(staging / f) for f in (model_file, PROFILE)},
            libraries=libraries,
            lineage=lineage,
            created=created,
        )
        (staging / MANIFEST).write_text(
            manifest.model_dump_json(by_alias=True, indent=2, exclude_none=True)
        )
        if tarball:
            out.parent.mkdir(parents=True, exist_ok=True)
            write_tarball(out, staging, (MANIFEST, PROFILE, model_file))
        else:
            out.mkdir(parents=True, exist_ok=True)
            for f in (MANIFEST, PROFILE, model_file):
                shutil.copy2(staging / f, out / f)
    return out


def write_tarball(out: Path, staging: Path, names: Sequence[str]) -> None:
    """A reproducible .tar.gz: members in the order given, with no times, owners or
    modes of the build machine, and a gzip header without a time or file name."""
    with (
        out.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar,
    ):
        for name in names:
            member = tar.gettarinfo(staging / name, arcname=name)
            member.mtime, member.mode = 0, 0o644
            member.uid = member.gid = 0
            member.uname = member.gname = ""
            with (staging / name).open("rb") as data:
                tar.addfile(member, data)


def _framework_of(model: Any) -> Framework:
    module = type(model).__module__
    if module.startswith("sklearn") or hasattr(model, "predict"):
        return "sklearn"
    if module.startswith("torch"):
        return "pytorch"
    if isinstance(model, str | Path) and str(model).endswith(".onnx"):
        return "onnx"
    raise BundleError(f"cannot tell the framework of {type(model).__name__}; pass framework=")


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
