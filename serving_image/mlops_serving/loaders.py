"""Save and load models of each framework behind one small interface.

Loading happens only after the bundle's digests were verified (bundle.open_bundle).
torch and onnxruntime are optional extras, imported only when a model needs them.
"""

import functools
import os
import pickle
import platform
from collections.abc import Callable
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


def _save_sklearn_onnx(model: Any, path: Path, features: Array) -> Model:
    from skl2onnx import to_onnx  # noqa: PLC0415

    onx = to_onnx(model, features[:1].astype(np.float32), options={"zipmap": False})
    path.write_bytes(onx.SerializeToString())
    reference = SklearnModel(model)
    return _load_onnx(path, reference.task, reference.classes)


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


def library_versions(*names: str) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _save_joblib(model: Any, path: Path, _: Array) -> Model:
    import joblib  # noqa: PLC0415

    joblib.dump(model, path)
    return SklearnModel(model)


def _load_joblib(path: Path, _: Manifest) -> Model:
    import joblib  # noqa: PLC0415

    return SklearnModel(joblib.load(path))


def _save_pickle(model: Any, path: Path, _: Array) -> Model:
    path.write_bytes(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
    return SklearnModel(model)


def _load_pickle(path: Path, _: Manifest) -> Model:
    return SklearnModel(pickle.loads(path.read_bytes()))  # noqa: S301 - digest verified before


def _save_skops(model: Any, path: Path, _: Array) -> Model:
    import skops.io  # noqa: PLC0415

    skops.io.dump(model, path)
    return SklearnModel(model)


def _load_skops(path: Path, _: Manifest) -> Model:
    import skops.io  # noqa: PLC0415

    return SklearnModel(skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path)))


def _save_torch(model: Any, path: Path, features: Array, format: Format) -> Model:
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
    else:
        batch = torch.export.Dim("batch", min=1)
        exported = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(exported, str(path))
    with torch.inference_mode():
        probe = module(example).numpy()
    task = _torch_task(probe)
    classes = list(range(probe.shape[1])) if task == "classification" else []
    return _load_torch(path, format, task, classes)


def _save_onnx_file(model: Any, path: Path, _: Array) -> Model:
    path.write_bytes(Path(model).read_bytes())
    return _load_onnx(path, "other", [])


def _load_onnx_file(path: Path, manifest: Manifest) -> Model:
    return _load_onnx(path, manifest.task, manifest.classes)


@dataclass(frozen=True)
class Codec:
    """One format of one framework: how a model is written into a bundle, how it is
    read back, and the libraries whose versions the bundle records."""

    save: Callable[[Any, Path, Array], Model]
    load: Callable[[Path, Manifest], Model]
    libraries: tuple[str, ...]


SKLEARN = ("scikit-learn", "numpy", "joblib", "skops")
CODECS: dict[tuple[Framework, Format], Codec] = {
    ("sklearn", "joblib"): Codec(_save_joblib, _load_joblib, SKLEARN),
    ("sklearn", "pickle"): Codec(_save_pickle, _load_pickle, SKLEARN),
    ("sklearn", "skops"): Codec(_save_skops, _load_skops, SKLEARN),
    ("sklearn", "onnx"): Codec(
        _save_sklearn_onnx, _load_onnx_file, ("scikit-learn", "skl2onnx", "onnxruntime", "numpy")
    ),
    ("pytorch", "torchscript"): Codec(
        functools.partial(_save_torch, format="torchscript"),
        lambda path, manifest: _load_torch(path, "torchscript", manifest.task, manifest.classes),
        ("torch", "numpy"),
    ),
    ("pytorch", "torch-export"): Codec(
        functools.partial(_save_torch, format="torch-export"),
        lambda path, manifest: _load_torch(path, "torch-export", manifest.task, manifest.classes),
        ("torch", "numpy"),
    ),
    ("onnx", "onnx"): Codec(_save_onnx_file, _load_onnx_file, ("onnxruntime", "numpy")),
}
"""Every (framework, format) a bundle may hold: one entry writes and reads each."""


def save_model(
    model: Any, framework: Framework, format: Format, path: Path, features: Array
) -> tuple[Model, dict[str, str]]:
    """Serialize `model` to `path` in `format`; return it reloaded, and library versions."""
    codec = CODECS.get((framework, format))
    if codec is None:
        raise BundleError(f"format {format} does not apply to {framework} models")
    return codec.save(model, path, features), library_versions(*codec.libraries)


def load_model(directory: Path, manifest: Manifest) -> Model:
    """Load a verified bundle's model file. Call only after bundle.open_bundle."""
    codec = CODECS.get((manifest.framework, manifest.format))
    if codec is None:
        raise BundleError(
            f"bundle.json: format {manifest.format} does not fit framework {manifest.framework}"
        )
    return codec.load(directory / manifest.model_file, manifest)
