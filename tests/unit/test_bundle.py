"""Bundles: build, round trip, profile, and the digest checks that guard every load."""

import io
import json
import os
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from mlops_contract.digest import DigestMismatchError, file_digest
from mlops_contract.profile import build_profile

from mlops_serving import bundle, packing
from mlops_serving.artifacts import materialize
from mlops_serving.bundle import BundleError, open_bundle, unpack
from mlops_serving.cli import main as bundle_cli
from mlops_serving.loaders import load_model

from .conftest import BuiltBundle, Iris, require


class Exploit:
    """Unpickling this writes a marker file: proof that a pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "pwned"))


@pytest.mark.parametrize("format", ["joblib", "pickle", "skops"])
def test_sklearn_round_trip_in_each_format(
    iris: Iris, tmp_path: Path, format: bundle.Format
) -> None:
    out = packing.build(
        iris.model, iris.frame, tmp_path / "b", name="iris", version="7", format=format
    )
    manifest, profile = open_bundle(out)
    assert (manifest.name, manifest.version, manifest.framework, manifest.format) == (
        "iris",
        "7",
        "sklearn",
        format,
    )
    assert manifest.task == "classification"
    assert manifest.classes == [0, 1, 2]
    assert manifest.features == list(iris.frame.columns)
    assert [t.name for t in manifest.signature.inputs] == list(iris.frame.columns)
    assert {t.name for t in manifest.signature.outputs} == {"predict", "predict_proba"}
    assert manifest.libraries["scikit-learn"]
    model = load_model(out, manifest)
    rows = iris.frame.to_numpy()
    assert model.predict(rows).primary.tolist() == iris.model.predict(rows).tolist()
    assert profile.rows == 150
    assert profile.prediction is not None
    assert sum(profile.prediction.counts) == 150


def test_profile_of_numeric_and_categorical_features(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    numeric = rng.normal(10, 2, 5000)
    colours = rng.choice(["red", "green", "blue"], 5000, p=[0.6, 0.3, 0.1])
    profile = build_profile({"size": numeric, "colour": colours})
    size, colour = profile.features
    assert size.kind == "numeric"
    assert len(size.edges) == 9
    assert sum(size.counts) == 5000
    assert max(size.counts) - min(size.counts) <= 2  # quantile bins hold equal shares
    assert size.sample == sorted(numeric.tolist())  # up to SAMPLE_SIZE, every value
    assert size.distinct == 5000
    (finer,) = build_profile({"size": numeric}, bins=20, sample_size=300).features
    assert len(finer.edges) == 19
    assert len(finer.sample) == 300
    assert finer.sample == sorted(finer.sample)
    assert size.mean == pytest.approx(10, abs=0.1)
    assert colour.kind == "categorical"
    assert colour.categories == ["red", "green", "blue"]
    assert sum(colour.counts) == 5000
    assert colour.counts[-1] == 0
    assert colour.bin_index(np.array(["blue", "purple"])).tolist() == [2, 3]


def test_reference_files_csv_parquet_npz(iris: Iris, tmp_path: Path) -> None:
    iris.frame.to_csv(tmp_path / "ref.csv", index=False)
    iris.frame.to_parquet(tmp_path / "ref.parquet")
    np.savez(tmp_path / "ref.npz", **{c: iris.frame[c].to_numpy() for c in iris.frame.columns})
    for name in ("ref.csv", "ref.parquet", "ref.npz"):
        columns = packing.read_reference(tmp_path / name)
        assert list(columns) == list(iris.frame.columns)
        assert np.allclose(columns["petal_width"], iris.frame["petal_width"])
    with pytest.raises(BundleError, match=r"unsupported format '\.xlsx'"):
        packing.read_reference(tmp_path / "ref.xlsx")


def test_tampered_pickle_is_refused_without_being_loaded(iris: Iris, tmp_path: Path) -> None:
    out = packing.build(
        iris.model, iris.frame, tmp_path / "b", name="iris", version="1", format="pickle"
    )
    marker = tmp_path / "unpickled"
    (out / "model.pkl").write_bytes(pickle.dumps(Exploit(marker)))
    with pytest.raises(
        DigestMismatchError,
        match=r"bundle file model.pkl: digest sha256:[0-9a-f]{64} does not match",
    ):
        open_bundle(out)
    assert not marker.exists()
    # The same exploit through the serving path, pinned by bundle.json's digest: the
    # copy into the cache refuses it.
    with pytest.raises(DigestMismatchError, match=r"bundle file model\.pkl"):
        materialize(f"file://{out}", file_digest(out / "bundle.json"), tmp_path / "cache", tmp_path)
    assert not marker.exists()
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


@pytest.mark.parametrize("kind", ["directory", "tarball on a volume"])
def test_what_is_verified_is_a_private_copy_and_what_is_loaded(
    iris: Iris, iris_bundle: BuiltBundle, tmp_path: Path, kind: str
) -> None:
    """A file on a shared volume may change after it was checked: the bundle loaded is
    the copy hashed on its way into the pod's cache, whatever the source does next."""
    if kind == "directory":
        source = packing.build(iris.model, iris.frame, tmp_path / "b", name="iris", version="1")
        uri, digest = f"file://{source}", file_digest(source / "bundle.json")
        tamper = source / "model.joblib"
    else:
        claim = tmp_path / "pvc" / "models"
        claim.mkdir(parents=True)
        tamper = claim / "iris.tar.gz"
        tamper.write_bytes(iris_bundle.path.read_bytes())
        uri, digest = "pvc://models/iris.tar.gz", iris_bundle.digest
    cache = tmp_path / "cache"
    directory = materialize(uri, digest, cache, tmp_path / "pvc")
    assert directory.is_relative_to(cache)
    tamper.write_bytes(b"something else")
    manifest, _ = open_bundle(directory)
    assert manifest.name == "iris"
    assert materialize(uri, digest, cache, tmp_path / "pvc") == directory


def test_tarball_is_verified_before_it_is_unpacked(
    iris_bundle: BuiltBundle, tmp_path: Path
) -> None:
    tampered = tmp_path / "iris.tar.gz"
    tampered.write_bytes(iris_bundle.path.read_bytes() + b"\0")
    with pytest.raises(DigestMismatchError, match=r"does not match the pinned"):
        materialize(f"file://{tampered}", iris_bundle.digest, tmp_path / "cache", tmp_path)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    with pytest.raises(DigestMismatchError, match=r"no digest pinned"):
        materialize(f"file://{iris_bundle.path}", None, tmp_path / "cache", tmp_path)
    with pytest.raises(DigestMismatchError, match=r"not of the form"):
        materialize(f"file://{iris_bundle.path}", "md5:abc", tmp_path / "cache", tmp_path)


def test_pvc_uri_reads_the_mounted_volume(iris_bundle: BuiltBundle, tmp_path: Path) -> None:
    claim = tmp_path / "pvc" / "models" / "iris"
    claim.mkdir(parents=True)
    (claim / "1.tar.gz").write_bytes(iris_bundle.path.read_bytes())
    directory = materialize(
        "pvc://models/iris/1.tar.gz", iris_bundle.digest, tmp_path / "cache", tmp_path / "pvc"
    )
    assert open_bundle(directory)[0].name == "iris"


def test_bundle_errors_name_the_problem(iris_bundle: BuiltBundle, tmp_path: Path) -> None:
    directory = unpack(iris_bundle.path, tmp_path / "b")
    (directory / "profile.json").unlink()
    with pytest.raises(BundleError, match=r"profile.json is missing"):
        open_bundle(directory)
    (directory / "bundle.json").write_text("{}")
    with pytest.raises(BundleError, match=r"invalid bundle manifest"):
        open_bundle(directory)
    with pytest.raises(BundleError, match=r"no bundle.json"):
        open_bundle(tmp_path)
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../escape")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(BundleError, match=r"unexpected entry '../escape'"):
        unpack(evil, tmp_path / "out")
    assert not (tmp_path / "escape").exists()


def tarball(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_unpacking_is_bounded_and_leaves_nothing_behind(tmp_path: Path) -> None:
    many = tarball(tmp_path / "many.tar.gz", {f"f{i}": b"x" for i in range(100)})
    with pytest.raises(BundleError, match="more than 16 entries"):
        unpack(many, tmp_path / "many")
    # A tarball of zeros: 2 MB claimed by a few KB of gzip.
    zeros = tarball(tmp_path / "zeros.tar.gz", {"model.joblib": b"\0" * 2_000_000})
    assert zeros.stat().st_size < 10_000
    with pytest.raises(BundleError, match="unpacks to more than 1000000 bytes"):
        unpack(zeros, tmp_path / "zeros", max_bytes=1_000_000)
    assert not (tmp_path / "zeros" / "model.joblib").exists()
    # Through materialize, a refused tarball leaves no staging folder in the cache.
    digest = file_digest(many)
    with pytest.raises(BundleError):
        materialize(f"file://{many}", digest, tmp_path / "cache", tmp_path)
    assert list((tmp_path / "cache" / "bundles").iterdir()) == []


def test_unknown_format_in_manifest_is_refused(iris: Iris, tmp_path: Path) -> None:
    out = packing.build(iris.model, iris.frame, tmp_path / "b", name="iris", version="1")
    manifest = json.loads((out / "bundle.json").read_text())
    manifest["format"] = "safetensors"
    (out / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"invalid bundle manifest"):
        open_bundle(out)


def test_cli_build_and_manifest(
    iris: Iris, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import joblib  # noqa: PLC0415

    joblib.dump(iris.model, tmp_path / "model.joblib")
    iris.frame.to_csv(tmp_path / "ref.csv", index=False)
    out = tmp_path / "iris-3.tar.gz"
    code = bundle_cli(
        [
            "build",
            "--model",
            str(tmp_path / "model.joblib"),
            "--reference",
            str(tmp_path / "ref.csv"),
            "--name",
            "iris",
            "--version",
            "3",
            "--out",
            str(out),
            "--git-commit",
            "1a2b3c4d",
        ]
    )
    assert code == 0
    assert capsys.readouterr().out.split() == [str(out), file_digest(out)]
    uri = "s3://models/iris-3.tar.gz"
    options = ["--stage", "Staging", "--alias", "challenger", "--metric", "accuracy=0.97"]
    assert bundle_cli(["manifest", str(out), "--uri", uri, *options]) == 0
    document = yaml.safe_load(capsys.readouterr().out)
    assert document["kind"] == "ModelVersion"
    assert document["metadata"]["name"] == "iris-3"
    spec = document["spec"]
    assert spec["artifact"] == {
        "uri": "s3://models/iris-3.tar.gz",
        "digest": file_digest(out),
        "format": "bundle",
    }
    assert spec["metrics"] == {"accuracy": 0.97}
    assert spec["aliases"] == ["challenger"]
    assert spec["lineage"]["gitCommit"] == "1a2b3c4d"
    assert spec["lineage"]["datasetDigest"] == file_digest(tmp_path / "ref.csv")
    assert [i["name"] for i in spec["signature"]["inputs"]] == list(iris.frame.columns)
    from mlops_operator.api.modelversion import ModelVersionSpec  # noqa: PLC0415

    assert ModelVersionSpec.model_validate(spec).artifact.digest == file_digest(out)


def test_builds_of_the_same_model_are_byte_for_byte_equal(
    iris: Iris, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Same model file and reference, same digest: a registry version keeps its bytes,
    and a rerun of the same build registers the same artifact."""
    import joblib  # noqa: PLC0415

    joblib.dump(iris.model, tmp_path / "model.joblib")
    iris.frame.to_csv(tmp_path / "ref.csv", index=False)
    digests = []
    for attempt in ("a", "b"):
        out = tmp_path / attempt / "iris-1.tar.gz"
        arguments = ["build", "--model", str(tmp_path / "model.joblib"),
                     "--reference", str(tmp_path / "ref.csv"),
                     "--name", "iris", "--version", "1", "--out", str(out)]  # fmt: skip
        assert bundle_cli(arguments) == 0
        digests.append(capsys.readouterr().out.split()[1])
        os.utime(tmp_path / "model.joblib", (0, 1_000_000))  # a later build, a touched file
    assert digests[0] == digests[1]
    with tarfile.open(tmp_path / "a" / "iris-1.tar.gz") as tar:
        members = tar.getmembers()
    assert [(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members] == [(0, 0, 0, "", "")] * 3


def test_cli_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "model.bin").write_bytes(b"x")
    (tmp_path / "ref.csv").write_text("a\n1\n")
    code = bundle_cli(
        [
            "build",
            "--model",
            str(tmp_path / "model.bin"),
            "--reference",
            str(tmp_path / "ref.csv"),
            "--name",
            "m",
            "--version",
            "1",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 1
    assert "--model" in capsys.readouterr().err
    reference = str(tmp_path / "ref.csv")
    names = ["--name", "m", "--version", "1", "--out", str(tmp_path / "o")]
    assert bundle_cli(["import-mlflow", str(tmp_path), "--reference", reference, *names]) == 1
    assert "no MLmodel file" in capsys.readouterr().err


def test_import_mlflow_sklearn_model_keeps_run_lineage(iris: Iris, tmp_path: Path) -> None:
    model_dir = tmp_path / "mlflow-model"
    model_dir.mkdir()
    (model_dir / "model.pkl").write_bytes(pickle.dumps(iris.model))
    (model_dir / "MLmodel").write_text(
        yaml.safe_dump(
            {
                "artifact_path": "model",
                "run_id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
                "flavors": {
                    "python_function": {
                        "loader_module": "mlflow.sklearn",
                        "model_path": "model.pkl",
                    },
                    "sklearn": {
                        "pickled_model": "model.pkl",
                        "serialization_format": "pickle",
                        "sklearn_version": "1.5.0",
                    },
                },
            }
        )
    )
    iris.frame.to_csv(tmp_path / "ref.csv", index=False)
    out = tmp_path / "bundle"
    assert bundle_cli(["import-mlflow", str(model_dir), "--reference", str(tmp_path / "ref.csv"),
                       "--name", "iris", "--version", "4", "--out", str(out)]) == 0  # fmt: skip
    manifest, _ = open_bundle(out)
    assert manifest.lineage is not None
    assert manifest.lineage.run_id == "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    assert manifest.framework == "sklearn"
    assert os.path.exists(out / "model.joblib")


def test_import_a_model_logged_by_mlflow(
    iris: Iris, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow = require("mlflow")
    require("mlflow.sklearn")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow-skinny has no database backend
    mlflow.set_tracking_uri(f"file://{tmp_path / 'mlruns'}")
    mlflow.set_experiment("iris")
    with mlflow.start_run() as run:
        logged = mlflow.sklearn.log_model(iris.model, name="model")
    local = Path(
        mlflow.artifacts.download_artifacts(logged.model_uri, dst_path=str(tmp_path / "dl"))
    )
    iris.frame.to_parquet(tmp_path / "ref.parquet")
    out = tmp_path / "iris.tar.gz"
    names = ["--name", "iris", "--version", "5", "--out", str(out)]
    assert (
        bundle_cli(
            ["import-mlflow", str(local), "--reference", str(tmp_path / "ref.parquet"), *names]
        )
        == 0
    )
    manifest, _ = open_bundle(unpack(out, tmp_path / "u"))
    assert manifest.lineage is not None
    assert manifest.lineage.run_id == run.info.run_id
    assert manifest.lineage.dataset_digest == file_digest(tmp_path / "ref.parquet")
    rows = iris.frame.to_numpy()
    assert (
        load_model(tmp_path / "u", manifest).predict(rows).primary.tolist()
        == iris.model.predict(rows).tolist()
    )
