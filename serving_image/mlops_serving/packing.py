"""Writing a bundle (`mlops-bundle build`): the model saved in its format, the
reference profiled, every file pinned in bundle.json. bundle.py holds the format
itself, its verification and unpacking, which the serving pods need; this module
is for the machine that trains."""

import gzip
import shutil
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from mlops_contract.digest import file_digest
from mlops_contract.profile import NUMERIC_BINS, SAMPLE_SIZE, build_profile

from .bundle import (
    MANIFEST,
    PROFILE,
    BundleError,
    Format,
    Framework,
    Lineage,
    Manifest,
    Signature,
    Tensor,
)
from .loaders import save_model

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


def _datatype(values: npt.NDArray[Any]) -> str:
    return DATATYPES.get(values.dtype.kind, "BYTES")


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
