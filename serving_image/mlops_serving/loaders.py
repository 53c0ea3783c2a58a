"""Save and load models of each framework behind one small interface.

Loading happens only after the bundle's digests were verified (bundle.open_bundle).
torch and onnxruntime are optional extras, imported only when a model needs them.
"""

import os
import pickle
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from .bundle import BundleError, Format, Framework, Manifest

Task = Literal["classification", "regression", "other"]
Array = npt.NDArray[Any]


@dataclass
class Outputs:
    """A model's answer for a batch: named output tensors and the primary prediction."""

    tensors: dict[str, Array]
    primary: Array
    class_index: npt.NDArray[np.intp] | None = None
    """For classifiers: the index in `classes` of each primary prediction."""

    def rows(self, start: int, stop: int) -> "Outputs":
        return Outputs(
            {k: v[start:stop] for k, v in self.tensors.items()},
            self.primary[start:stop],
            None if self.class_index is None else self.class_index[start:stop],
        )


class Model(Protocol):
    task: Task
    classes: list[Any]

    def predict(self, features: Array) -> Outputs: ...


@dataclass
class SklearnModel:
    estimator: Any
    task: Task = "other"
    classes: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        classes = getattr(self.estimator, "classes_", None)
        if classes is not None:
            self.task, self.classes = "classification", np.asarray(classes).tolist()
        elif getattr(self.estimator, "_estimator_type", None) == "regressor" or hasattr(
            self.estimator, "coef_"
        ):
            self.task = "regression"
        self._proba = self.task == "classification" and hasattr(self.estimator, "predict_proba")
        self._class_array = np.asarray(self.classes)

    def predict(self, features: Array) -> Outputs:
        if self._proba:
            probabilities = self.estimator.predict_proba(features)
            index = probabilities.argmax(axis=1)
            labels = self._class_array[index]
            return Outputs({"predict": labels, "predict_proba": probabilities}, labels, index)
        predictions = np.asarray(self.estimator.predict(features))
        return Outputs({"predict": predictions}, predictions)


def container_cpus() -> int:
    """CPUs this process may use: the cgroup quota if any, else its affinity mask."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus


@dataclass
class TorchModel:
    module: Any
    task: Task = "other"
    classes: list[Any] = field(default_factory=list)

    def predict(self, features: Array) -> Outputs:
        import torch  # noqa: PLC0415

        with torch.inference_mode():
            output = self.module(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))
        values = output.numpy()
        if self.task == "classification":
            index = values.argmax(axis=1)
            labels = np.asarray(self.classes)[index]
            return Outputs({"output": values, "predict": labels}, labels, index)
        primary = values[:, 0] if values.ndim == 2 and values.shape[1] == 1 else values
        return Outputs({"output": values}, primary)


@dataclass
class OnnxModel:
    session: Any
    task: Task = "other"
    classes: list[Any] = field(default_factory=list)

    def predict(self, features: Array) -> Outputs:
        (model_input,) = self.session.get_inputs()
        dtype = np.float32 if "float)" in model_input.type else np.float64
        results = self.session.run(None, {model_input.name: features.astype(dtype)})
        names = [o.name for o in self.session.get_outputs()]
        tensors = {n: np.asarray(r) for n, r in zip(names, results, strict=True)}
        primary = tensors[names[0]]
        if primary.ndim == 2 and primary.shape[1] == 1:
            primary = primary[:, 0]
        return Outputs(tensors, primary)


def _torch_task(output: Array) -> Task:
    return "classification" if output.ndim == 2 and output.shape[1] > 1 else "regression"


def save_model(
    model: Any, framework: Framework, format: Format, path: Path, features: Array
) -> tuple[Model, dict[str, str]]:
    """Serialize `model` to `path` in `format`; return it reloaded, and library versions."""
    if framework == "sklearn":
        if format == "joblib":
            import joblib  # noqa: PLC0415

            joblib.dump(model, path)
        elif format == "pickle":
            path.write_bytes(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
        elif format == "skops":
            import skops.io  # noqa: PLC0415

            skops.io.dump(model, path)
        elif format == "onnx":
            return _save_sklearn_onnx(model, path, features)
        else:
            raise BundleError(f"format {format} does not apply to sklearn models")
        return SklearnModel(model), library_versions("scikit-learn", "numpy", "joblib", "skops")
    if framework == "pytorch":
        import torch  # noqa: PLC0415

        example = torch.from_numpy(np.ascontiguousarray(features[:8], dtype=np.float32))
        module = model.eval()
        if format == "torchscript":
            scripted = (
                module
                if isinstance(module, torch.jit.ScriptModule)
                else torch.jit.trace(module, example)  # type: ignore[no-untyped-call]
            )
            torch.jit.save(scripted, str(path))
        elif format == "torch-export":
            batch = torch.export.Dim("batch", min=1)
            exported = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
            torch.export.save(exported, str(path))
        else:
            raise BundleError(f"format {format} does not apply to pytorch models")
        with torch.inference_mode():
            probe = module(example).numpy()
        task = _torch_task(probe)
        classes = list(range(probe.shape[1])) if task == "classification" else []
        return _load_torch(path, format, task, classes), library_versions("torch", "numpy")
    if framework == "onnx":
        path.write_bytes(Path(model).read_bytes())
        return _load_onnx(path, "other", []), library_versions("onnxruntime", "numpy")
    raise BundleError(f"unknown framework {framework}")


def _save_sklearn_onnx(model: Any, path: Path, features: Array) -> tuple[Model, dict[str, str]]:
    from skl2onnx import to_onnx  # noqa: PLC0415

    onx = to_onnx(model, features[:1].astype(np.float32), options={"zipmap": False})
    path.write_bytes(onx.SerializeToString())
    reference = SklearnModel(model)
    return _load_onnx(path, reference.task, reference.classes), library_versions(
        "scikit-learn", "skl2onnx", "onnxruntime", "numpy"
    )


def _load_torch(path: Path, format: Format, task: Task, classes: list[Any]) -> TorchModel:
    import torch  # noqa: PLC0415

    torch.set_num_threads(container_cpus())
    if format == "torchscript":
        module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    else:
        module = torch.export.load(str(path)).module()
    return TorchModel(module, task, classes)


def _load_onnx(path: Path, task: Task, classes: list[Any]) -> OnnxModel:
    import onnxruntime  # noqa: PLC0415

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = container_cpus()
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return OnnxModel(session, task, classes)


def load_model(directory: Path, manifest: Manifest) -> Model:
    """Load a verified bundle's model file. Call only after bundle.open_bundle."""
    path = directory / manifest.model_file
    if manifest.framework == "sklearn" and manifest.format in ("joblib", "pickle", "skops"):
        if manifest.format == "joblib":
            import joblib  # noqa: PLC0415

            estimator = joblib.load(path)
        elif manifest.format == "pickle":
            estimator = pickle.loads(path.read_bytes())  # noqa: S301 - digest verified before
        else:
            import skops.io  # noqa: PLC0415

            estimator = skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))
        return SklearnModel(estimator)
    if manifest.format in ("torchscript", "torch-export"):
        return _load_torch(path, manifest.format, manifest.task, manifest.classes)
    if manifest.format == "onnx":
        return _load_onnx(path, manifest.task, manifest.classes)
    raise BundleError(
        f"bundle.json: format {manifest.format} does not fit framework {manifest.framework}"
    )


def library_versions(*names: str) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
