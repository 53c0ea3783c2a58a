"""`mlops-bundle`: build model bundles and the ModelVersion manifests that point at them.

mlops-bundle build --model M --reference R --name N --version V --out OUT
mlops-bundle import-mlflow MLFLOW_MODEL_DIR --reference R --name N --version V --out OUT
mlops-bundle manifest BUNDLE --uri URI [--stage S] [--alias A] [--metric k=v]
"""

import argparse
import pickle
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from mlops_contract.digest import file_digest
from mlops_contract.profile import NUMERIC_BINS, SAMPLE_SIZE

from .bundle import BundleError, Lineage, open_bundle, unpack
from .packing import build, read_reference

MLFLOW_FLAVORS = {"sklearn": "sklearn", "pytorch": "pytorch", "onnx": "onnx"}


def _load_model_file(path: Path, framework: str | None) -> tuple[Any, str]:
    """A trained model from a file the user made: joblib/pickle (sklearn), TorchScript, ONNX."""
    suffix = path.suffix.lower()
    if suffix == ".onnx" or framework == "onnx":
        return path, "onnx"
    if suffix in (".pt", ".pth") or framework == "pytorch":
        import torch  # noqa: PLC0415

        return torch.jit.load(str(path), map_location="cpu"), "pytorch"  # type: ignore[no-untyped-call]
    if suffix == ".joblib":
        import joblib  # noqa: PLC0415

        return joblib.load(path), "sklearn"
    if suffix in (".pkl", ".pickle"):
        return pickle.loads(path.read_bytes()), "sklearn"  # noqa: S301 - the user's own file
    if suffix == ".skops":
        import skops.io  # noqa: PLC0415

        return skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path)), "sklearn"
    raise BundleError(f"--model {path}: unknown model file type {suffix!r}")


def import_mlflow(model_dir: Path) -> tuple[Any, str, Lineage]:
    """Model and lineage from a local MLflow model directory (its MLmodel file)."""
    mlmodel_path = model_dir / "MLmodel"
    if not mlmodel_path.is_file():
        raise BundleError(f"{model_dir}: no MLmodel file; is this an MLflow model directory?")
    mlmodel = yaml.safe_load(mlmodel_path.read_text())
    flavors = mlmodel.get("flavors", {})
    lineage = Lineage(run_id=mlmodel.get("run_id"), dataset_uri=None)
    if "sklearn" in flavors:
        flavor = flavors["sklearn"]
        model_file = model_dir / flavor["pickled_model"]
        if flavor.get("serialization_format") == "cloudpickle":
            import cloudpickle  # noqa: PLC0415

            return cloudpickle.loads(model_file.read_bytes()), "sklearn", lineage
        return _load_model_file(model_file, "sklearn")[0], "sklearn", lineage
    if "onnx" in flavors:
        return model_dir / flavors["onnx"]["data"], "onnx", lineage
    raise BundleError(f"{mlmodel_path}: no supported flavor (sklearn, onnx) in {sorted(flavors)}")


def model_version_manifest(
    bundle: Path,
    uri: str,
    *,
    stage: str = "None",
    aliases: list[str] | None = None,
    metrics: dict[str, float] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """A ModelVersion for kubectl or a GitOps repository, pinned to this bundle's digest."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = bundle if bundle.is_dir() else unpack(bundle, Path(tmp))
        manifest, _ = open_bundle(directory)
        digest = file_digest(bundle / "bundle.json" if bundle.is_dir() else bundle)
    spec: dict[str, Any] = {
        "model": manifest.name,
        "version": manifest.version,
        "framework": manifest.framework,
        "artifact": {"uri": uri, "digest": digest, "format": "bundle"},
        "signature": manifest.signature.model_dump(),
        "stage": stage,
    }
    if metrics:
        spec["metrics"] = metrics
    if aliases:
        spec["aliases"] = aliases
    if manifest.lineage:
        spec["lineage"] = manifest.lineage.model_dump(by_alias=True, exclude_none=True)
    return {
        "apiVersion": "mlops.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {
            "name": name or f"{manifest.name}-{manifest.version}".lower().replace(".", "-")
        },
        "spec": spec,
    }


def _metric(text: str) -> tuple[str, float]:
    key, _, value = text.partition("=")
    try:
        return key, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--metric {text!r}: expected name=number") from None


def _common_build_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reference", type=Path, required=True, help="reference data: CSV, Parquet or NPZ"
    )
    parser.add_argument("--name", required=True, help="registered model name")
    parser.add_argument("--version", required=True, help="model version")
    parser.add_argument(
        "--out", type=Path, required=True, help="bundle directory, or a .tar.gz path"
    )
    parser.add_argument(
        "--format", help="serialization: joblib, pickle, skops, torchscript, torch-export, onnx"
    )
    parser.add_argument(
        "--profile-bins",
        type=int,
        default=NUMERIC_BINS,
        help=f"quantile bins per numeric feature in profile.json (default {NUMERIC_BINS})",
    )
    parser.add_argument(
        "--profile-sample",
        type=int,
        default=SAMPLE_SIZE,
        help=f"sorted reference values kept per numeric feature (default {SAMPLE_SIZE})",
    )
    parser.add_argument(
        "--created",
        help="when the model was made, recorded in bundle.json (none by default: two builds "
        "of the same model are byte for byte equal)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlops-bundle", description="Build model bundles.")
    commands = parser.add_subparsers(dest="command", required=True)
    build_cmd = commands.add_parser(
        "build", help="bundle a trained model with its reference profile"
    )
    build_cmd.add_argument(
        "--model", type=Path, required=True, help="joblib/pickle/skops, TorchScript .pt, or .onnx"
    )
    build_cmd.add_argument("--framework", choices=["sklearn", "pytorch", "onnx"])
    build_cmd.add_argument("--run-id", help="tracking run id for the lineage")
    build_cmd.add_argument("--git-commit", help="commit of the training code")
    build_cmd.add_argument("--dataset-uri", help="training dataset location")
    _common_build_args(build_cmd)
    mlflow_cmd = commands.add_parser("import-mlflow", help="bundle a local MLflow model directory")
    mlflow_cmd.add_argument("path", type=Path)
    _common_build_args(mlflow_cmd)
    manifest_cmd = commands.add_parser("manifest", help="print a ModelVersion for a bundle")
    manifest_cmd.add_argument("bundle", type=Path)
    manifest_cmd.add_argument("--uri", required=True, help="where the bundle will be served from")
    manifest_cmd.add_argument(
        "--stage", default="None", choices=["None", "Staging", "Production", "Archived"]
    )
    manifest_cmd.add_argument("--alias", action="append", default=[])
    manifest_cmd.add_argument("--metric", action="append", default=[], type=_metric)
    manifest_cmd.add_argument("--object-name", help="metadata.name (default: MODEL-VERSION)")
    args = parser.parse_args(argv)
    try:
        if args.command == "manifest":
            document = model_version_manifest(
                args.bundle,
                args.uri,
                stage=args.stage,
                aliases=args.alias,
                metrics=dict(args.metric),
                name=args.object_name,
            )
            sys.stdout.write(yaml.safe_dump(document, sort_keys=False))
            return 0
        if args.command == "build":
            model, framework = _load_model_file(args.model, args.framework)
            lineage = Lineage(
                run_id=args.run_id, git_commit=args.git_commit, dataset_uri=args.dataset_uri
            )
        else:
            model, framework, lineage = import_mlflow(args.path)
        lineage.dataset_digest = lineage.dataset_digest or file_digest(args.reference)
        out = build(
            model,
            read_reference(args.reference),
            args.out,
            name=args.name,
            version=args.version,
            framework=framework,  # type: ignore[arg-type]
            format=args.format,
            lineage=lineage,
            profile_bins=args.profile_bins,
            profile_sample=args.profile_sample,
            created=args.created,
        )
    except (BundleError, OSError, ValueError) as error:
        print(f"mlops-bundle: {error}", file=sys.stderr)
        return 1
    digest = file_digest(out / "bundle.json" if out.is_dir() else out)
    print(f"{out} {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
