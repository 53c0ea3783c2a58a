"""Turn request payloads into feature matrices, checked against the signature.

Every failure is a RequestError whose message names the offending field, and
answered with a 4xx; nothing here touches the model.
"""

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from .bundle import Manifest

DATATYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
NUMERIC_KINDS = "biuf"


class RequestError(Exception):
    """A request the server refuses: `status` and a message naming `field`."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.status = status
        self.field = field
        self.message = message


class Features:
    """The model's input columns, and how to build a matrix from requests."""

    def __init__(self, manifest: Manifest, max_rows: int = 10_000) -> None:
        self.max_rows = max_rows
        """Most rows in one request: more would hold the event loop (and the liveness
        probe behind it) for seconds. Checked before the rows are built."""
        self.names = manifest.features
        self.index = {name: i for i, name in enumerate(self.names)}
        datatypes = {t.name: t.datatype for t in manifest.signature.inputs}
        self.numeric = all(datatypes.get(n, "FP64") != "BYTES" for n in self.names)
        self.dtype: type = np.float64 if self.numeric else np.object_

    def _row_from_list(self, values: list[Any], field: str) -> list[Any]:
        if len(values) != len(self.names):
            raise RequestError(
                422,
                field,
                f"expected {len(self.names)} values ({', '.join(self.names)}), got {len(values)}",
            )
        return values

    def _row_from_dict(self, values: dict[str, Any], field: str) -> list[Any]:
        missing = [n for n in self.names if n not in values]
        if missing:
            raise RequestError(422, f"{field}.{missing[0]}", "missing feature")
        unknown = [k for k in values if k not in self.index]
        if unknown:
            raise RequestError(422, f"{field}.{unknown[0]}", "unknown feature")
        return [values[n] for n in self.names]

    def row(self, value: Any, field: str) -> list[Any]:
        if isinstance(value, list):
            return self._row_from_list(value, field)
        if isinstance(value, dict):
            return self._row_from_dict(value, field)
        raise RequestError(422, field, "must be a list of values or an object of feature: value")

    def matrix(self, rows: list[list[Any]], field: str) -> npt.NDArray[Any]:
        try:
            array: npt.NDArray[Any] = np.array(rows, dtype=self.dtype)
        except (TypeError, ValueError) as error:
            raise RequestError(422, field, f"values must be numbers: {error}") from None
        if array.ndim != 2:
            raise RequestError(422, field, "values must be scalars")
        if self.numeric and not np.isfinite(array).all():
            raise RequestError(422, field, "values must be finite numbers")
        return array

    def from_predict(self, payload: Any) -> npt.NDArray[Any]:
        """POST /predict: {"features": [v, ...] | {name: v, ...}} for one row."""
        if not isinstance(payload, dict) or "features" not in payload:
            raise RequestError(
                422, "features", "required: a list of values or an object of feature: value"
            )
        return self.matrix([self.row(payload["features"], "features")], "features")

    def from_predict_batch(self, payload: Any) -> npt.NDArray[Any]:
        """POST /predict-batch: {"instances": [row, ...]}, each row a list or an object."""
        if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list):
            raise RequestError(422, "instances", "required: a list of rows")
        instances = payload["instances"]
        if not instances:
            raise RequestError(422, "instances", "must hold at least one row")
        self._within_limit(len(instances), "instances")
        return self.matrix(
            [self.row(r, f"instances[{i}]") for i, r in enumerate(instances)], "instances"
        )

    def from_infer(self, payload: Any) -> npt.NDArray[Any]:
        """OIP v2 inputs: one [N, F] tensor, or one [N] (or [N, 1]) tensor per feature."""
        tensors = self._tensors(payload)
        if len(tensors) == 1 and tensors[0][1].ndim == 2 and tensors[0][0] not in self.index:
            name, array = tensors[0]
            if array.shape[1] != len(self.names):
                raise RequestError(
                    422,
                    "inputs[0].shape",
                    f"expected [N, {len(self.names)}], got {list(array.shape)}",
                )
            return self._checked(array.astype(self.dtype, copy=False), "inputs[0]")
        columns: dict[str, npt.NDArray[Any]] = {}
        for i, (name, tensor) in enumerate(tensors):
            if name not in self.index:
                expected = ", ".join(self.names)
                raise RequestError(
                    422, f"inputs[{i}].name", f"unknown input {name!r}; expected one of {expected}"
                )
            column = tensor[:, 0] if tensor.ndim == 2 and tensor.shape[1] == 1 else tensor
            if column.ndim != 1:
                raise RequestError(
                    422, f"inputs[{i}].shape", "a per-feature input must have shape [N] or [N, 1]"
                )
            columns[name] = column
        missing = [n for n in self.names if n not in columns]
        if missing:
            raise RequestError(422, "inputs", f"missing input {missing[0]!r}")
        lengths = {len(c) for c in columns.values()}
        if len(lengths) != 1:
            raise RequestError(422, "inputs", "all inputs must have the same number of rows")
        return self._checked(
            np.column_stack([columns[n] for n in self.names]).astype(self.dtype, copy=False),
            "inputs",
        )

    def _tensors(self, payload: Any) -> list[tuple[str, npt.NDArray[Any]]]:
        """The request's named input tensors, each checked on its own."""
        if not isinstance(payload, dict):
            raise RequestError(422, "body", "must be a JSON object")
        inputs = payload.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise RequestError(422, "inputs", "required: a non-empty list of tensors")
        for i, tensor in enumerate(inputs):
            shape = tensor.get("shape") if isinstance(tensor, dict) else None
            if isinstance(shape, list) and shape and isinstance(shape[0], int):
                self._within_limit(shape[0], f"inputs[{i}].shape")
        tensors = [self._tensor(t, f"inputs[{i}]") for i, t in enumerate(inputs)]
        for i, (_, tensor) in enumerate(tensors):
            if self.numeric and tensor.dtype == object:
                raise RequestError(
                    422, f"inputs[{i}].datatype", "BYTES, but this model's features are numeric"
                )
        return tensors

    def _within_limit(self, rows: int, field: str) -> None:
        if rows > self.max_rows:
            raise RequestError(413, field, f"{rows} rows; at most {self.max_rows} in one request")

    def _checked(self, array: npt.NDArray[Any], field: str) -> npt.NDArray[Any]:
        if self.numeric and not np.isfinite(array).all():
            raise RequestError(422, f"{field}.data", "values must be finite numbers")
        return array

    @staticmethod
    def _tensor(tensor: Any, field: str) -> tuple[str, npt.NDArray[Any]]:
        if not isinstance(tensor, dict):
            raise RequestError(422, field, "must be an object with name, shape, datatype, data")
        name, shape, datatype, data = (tensor.get(k) for k in ("name", "shape", "datatype", "data"))
        if not isinstance(name, str) or not name:
            raise RequestError(422, f"{field}.name", "required: a non-empty string")
        shape = checked_shape(shape, f"{field}.shape")
        if datatype not in DATATYPES:
            raise RequestError(422, f"{field}.datatype", f"must be one of {', '.join(DATATYPES)}")
        if isinstance(data, np.ndarray):  # decoded from the binary extension (binary.py)
            array = data
        elif isinstance(data, list):
            array = _typed_array(data, datatype, f"{field}.data")
        else:
            raise RequestError(422, f"{field}.data", "required: a list")
        if array.size != math.prod(shape):
            raise RequestError(
                422,
                f"{field}.data",
                f"has {array.size} values; shape {shape} needs {math.prod(shape)}",
            )
        if array.size == 0:
            raise RequestError(422, f"{field}.shape", "must hold at least one row")
        return name, array.reshape(shape)


MAX_DIMS = 2
"""[N, F] for all features, [N] or [N, 1] for one: no tabular input has more."""


def checked_shape(shape: Any, field: str) -> list[int]:
    """A tensor's shape: at most MAX_DIMS non-negative integers."""
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise RequestError(422, field, "required: a list of non-negative integers")
    if len(shape) > MAX_DIMS:
        raise RequestError(422, field, f"{len(shape)} dimensions; inputs are [N, F], [N] or [N, 1]")
    return shape


ALLOWED_KINDS = (
    {"BOOL": "b", "BYTES": "U"}
    | dict.fromkeys((t for t in DATATYPES if "INT" in t), "iu")
    | dict.fromkeys(("FP16", "FP32", "FP64"), "iuf")
)


def _typed_array(data: list[Any], datatype: str, field: str) -> npt.NDArray[Any]:
    """`data` as an array of `datatype`, refusing values the type cannot hold exactly."""
    try:
        raw = np.array(data)
    except (TypeError, ValueError, OverflowError):
        raise RequestError(
            422, field, "must be a flat or regularly nested list of values"
        ) from None
    if raw.size and raw.dtype.kind not in ALLOWED_KINDS[datatype]:
        raise RequestError(422, field, f"values do not fit datatype {datatype}")
    dtype = DATATYPES[datatype]
    if raw.size and raw.dtype.kind in "iu" and dtype not in (np.float16, np.float32, np.float64):
        limits = np.iinfo(dtype)
        if raw.min() < limits.min or raw.max() > limits.max:
            raise RequestError(422, field, f"values out of range for {datatype}")
    return raw.astype(dtype, copy=False)


def infer_outputs(tensors: dict[str, npt.NDArray[Any]], requested: Any) -> list[dict[str, Any]]:
    """OIP v2 output tensors, restricted to the requested names if any."""
    if requested is not None:
        if not isinstance(requested, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
        ):
            raise RequestError(422, "outputs", "must be a list of {name}")
        names = [o["name"] for o in requested]
        unknown = [n for n in names if n not in tensors]
        if unknown:
            raise RequestError(
                422, "outputs", f"unknown output {unknown[0]!r}; the model has {', '.join(tensors)}"
            )
    else:
        names = list(tensors)
    return [_tensor_json(name, tensors[name]) for name in names]


def _tensor_json(name: str, array: npt.NDArray[Any]) -> dict[str, Any]:
    kind = array.dtype.kind
    if kind == "f":
        datatype = "FP32" if array.dtype == np.float32 else "FP64"
    elif kind in "iu":
        datatype = "INT64"
    elif kind == "b":
        datatype = "BOOL"
    else:
        datatype = "BYTES"
    data = array.ravel().tolist() if kind in "biuf" else [str(v) for v in array.ravel()]
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": data}
