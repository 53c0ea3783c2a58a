"""The Open Inference Protocol's binary tensor extension (as KServe and Triton speak it).

A request whose `Inference-Header-Content-Length` header is set carries that many
bytes of JSON, then the raw data of every input whose `parameters.binary_data_size`
is set, in input order. Fixed-size types are little-endian, BOOL one byte each,
and BYTES elements each a 4-byte little-endian length and the bytes.

Outputs go back as raw data when the request asks (`parameters.binary_data_output`,
or an output's `parameters.binary_data`): the JSON then names their sizes, and the
response's `Inference-Header-Content-Length` says where the JSON ends.
"""

import math
import struct
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from .requests import DATATYPES, RequestError, checked_shape

HEADER = "inference-header-content-length"
LENGTH = struct.Struct("<I")


def split(body: bytes, header: str) -> Any:
    """The JSON part of a binary request, with each binary input's data decoded in place."""
    # str.isdigit also holds for "²" and other digits int() refuses.
    if not (header.isascii() and header.isdigit()) or not 0 < int(header) <= len(body):
        raise RequestError(
            400,
            "Inference-Header-Content-Length",
            f"must be the JSON header's length in bytes (1 to {len(body)}), got {header!r}",
        )
    size = int(header)
    try:
        payload = orjson.loads(body[:size])
    except orjson.JSONDecodeError as error:
        raise RequestError(400, "body", f"malformed JSON header: {error}") from None
    blob = memoryview(body)[size:]
    used = 0
    inputs = payload.get("inputs") if isinstance(payload, dict) else None
    for i, tensor in enumerate(inputs if isinstance(inputs, list) else []):
        parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
        if not isinstance(parameters, dict) or "binary_data_size" not in parameters:
            continue
        field = f"inputs[{i}].parameters.binary_data_size"
        length = parameters["binary_data_size"]
        if not isinstance(length, int) or isinstance(length, bool) or length < 0:
            raise RequestError(422, field, "must be a non-negative integer")
        if used + length > len(blob):
            raise RequestError(
                422,
                field,
                f"{length} bytes from offset {used}, but the binary data has {len(blob)}",
            )
        if "data" in tensor:
            raise RequestError(422, f"inputs[{i}].data", "must be absent when sent as binary")
        tensor["data"] = _decode(tensor, bytes(blob[used : used + length]), field)
        used += length
    if used != len(blob):
        raise RequestError(
            422, "body", f"{len(blob) - used} bytes of binary data are not claimed by any input"
        )
    return payload


def _decode(tensor: dict[str, Any], raw: bytes, field: str) -> npt.NDArray[Any]:
    datatype, shape = tensor.get("datatype"), tensor.get("shape")
    if datatype not in DATATYPES:
        raise RequestError(422, field.replace("parameters.binary_data_size", "datatype"),
                           f"must be one of {', '.join(DATATYPES)}")  # fmt: skip
    if datatype == "BYTES":
        return _decode_bytes(raw, field)
    shape = checked_shape(shape, field.replace("parameters.binary_data_size", "shape"))
    dtype = _wire_dtype(datatype)
    count = math.prod(shape)
    if len(raw) != count * dtype.itemsize:
        raise RequestError(
            422,
            field,
            f"{len(raw)} bytes; shape {shape} of {datatype} needs {count * dtype.itemsize}",
        )
    values = np.frombuffer(raw, dtype)
    return values != 0 if datatype == "BOOL" else values.astype(dtype.newbyteorder("="))


def _decode_bytes(raw: bytes, field: str) -> npt.NDArray[Any]:
    items: list[str] = []
    offset = 0
    while offset < len(raw):
        if offset + LENGTH.size > len(raw):
            raise RequestError(422, field, f"BYTES element {len(items)}: truncated length prefix")
        (length,) = LENGTH.unpack_from(raw, offset)
        offset += LENGTH.size
        if offset + length > len(raw):
            raise RequestError(422, field, f"BYTES element {len(items)}: {length} bytes overrun")
        try:
            items.append(raw[offset : offset + length].decode())
        except UnicodeDecodeError:
            raise RequestError(422, field, f"BYTES element {len(items)}: not UTF-8") from None
        offset += length
    return np.array(items, dtype=object)


def wants_binary(payload: Any) -> tuple[bool, set[str]]:
    """Whether all outputs go back as binary, and which named ones do."""
    parameters = payload.get("parameters") if isinstance(payload, dict) else None
    everything = isinstance(parameters, dict) and parameters.get("binary_data_output") is True
    named = {
        o["name"]
        for o in (payload.get("outputs") or [] if isinstance(payload, dict) else [])
        if isinstance(o, dict)
        and isinstance(o.get("parameters"), dict)
        and o["parameters"].get("binary_data") is True
    }
    return everything, named


def encode(outputs: list[dict[str, Any]], arrays: dict[str, npt.NDArray[Any]],
           everything: bool, named: set[str]) -> tuple[list[dict[str, Any]], bytes]:  # fmt: skip
    """Move the chosen outputs' data out of the JSON into one blob, in output order."""
    blob = bytearray()
    for output in outputs:
        if not (everything or output["name"] in named):
            continue
        raw = _encode(arrays[output["name"]], output["datatype"])
        del output["data"]
        output["parameters"] = {"binary_data_size": len(raw)}
        blob += raw
    return outputs, bytes(blob)


def _encode(array: npt.NDArray[Any], datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = []
        for value in array.ravel():
            encoded = value if isinstance(value, bytes) else str(value).encode()
            parts += [LENGTH.pack(len(encoded)), encoded]
        return b"".join(parts)
    dtype = _wire_dtype(datatype)
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def _wire_dtype(datatype: str) -> np.dtype[Any]:
    """How a fixed-size datatype travels: little-endian, BOOL as one byte."""
    return np.dtype(np.uint8 if datatype == "BOOL" else DATATYPES[datatype]).newbyteorder("<")
