"""The OIP binary tensor extension: raw input data after the JSON header, raw outputs
on request, and a 4xx naming the field for every inconsistent binary request."""

import struct
from typing import Any

import numpy as np
import orjson
import pytest

from mlops_serving import binary
from mlops_serving.requests import RequestError

from .conftest import ClientFactory, Iris

INFER = "/v2/models/iris/infer"


def binary_request(header: dict[str, Any], *blobs: bytes) -> tuple[bytes, dict[str, str]]:
    head = orjson.dumps(header)
    return head + b"".join(blobs), {
        "Inference-Header-Content-Length": str(len(head)),
        "Content-Type": "application/octet-stream",
    }


def split_response(body: bytes, header_length: str) -> tuple[dict[str, Any], bytes]:
    size = int(header_length)
    return orjson.loads(body[:size]), body[size:]


async def test_binary_inputs_give_the_json_answer(client_for: ClientFactory, iris: Iris) -> None:
    rows = iris.frame.to_numpy()[:5]
    as_json = {"inputs": [{"name": "x", "shape": [5, 4], "datatype": "FP64",
                           "data": rows.ravel().tolist()}]}  # fmt: skip
    raw = rows.astype("<f8").tobytes()
    as_binary = {"inputs": [{"name": "x", "shape": [5, 4], "datatype": "FP64",
                             "parameters": {"binary_data_size": len(raw)}}]}  # fmt: skip
    columns = [rows[:, j].astype("<f4").tobytes() for j in range(4)]
    per_feature = {
        "inputs": [
            {"name": name, "shape": [5], "datatype": "FP32",
             "parameters": {"binary_data_size": len(columns[j])}}
            for j, name in enumerate(iris.frame.columns)
        ]
    }  # fmt: skip
    async with client_for() as client:
        expected = (await client.post(INFER, json=as_json)).json()
        body, headers = binary_request(as_binary, raw)
        by_matrix = await client.post(INFER, content=body, headers=headers)
        body, headers = binary_request(per_feature, *columns)
        by_columns = await client.post(INFER, content=body, headers=headers)
    assert by_matrix.status_code == 200, by_matrix.text
    assert by_matrix.json()["outputs"] == expected["outputs"]
    assert by_columns.status_code == 200, by_columns.text
    predicted = {o["name"]: o for o in by_columns.json()["outputs"]}["predict"]
    assert predicted["data"] == iris.model.predict(rows.astype(np.float32)).tolist()


async def test_binary_outputs_on_request(client_for: ClientFactory, iris: Iris) -> None:
    rows = iris.frame.to_numpy()[:4]
    data = rows.ravel().tolist()
    request = {
        "inputs": [{"name": "x", "shape": [4, 4], "datatype": "FP64", "data": data}],
        "outputs": [{"name": "predict", "parameters": {"binary_data": True}},
                    {"name": "predict_proba"}],
    }  # fmt: skip
    async with client_for() as client:
        one = await client.post(INFER, json=request)
        every = await client.post(
            INFER, json={**request, "parameters": {"binary_data_output": True}}
        )
    head, blob = split_response(one.content, one.headers["inference-header-content-length"])
    assert one.headers["content-type"] == "application/octet-stream"
    predict, proba = head["outputs"]
    assert "data" not in predict
    assert predict["parameters"]["binary_data_size"] == len(blob) == 4 * 8
    assert np.frombuffer(blob, "<i8").tolist() == iris.model.predict(rows).tolist()
    assert proba["data"] == pytest.approx(iris.model.predict_proba(rows).ravel().tolist())

    head, blob = split_response(every.content, every.headers["inference-header-content-length"])
    sizes = [o["parameters"]["binary_data_size"] for o in head["outputs"]]
    assert sizes == [4 * 8, 4 * 3 * 8]
    probabilities = np.frombuffer(blob[sizes[0] :], "<f8").reshape(4, 3)
    np.testing.assert_allclose(probabilities, iris.model.predict_proba(rows))


def tensor(size: int, **extra: Any) -> dict[str, Any]:
    return {"name": "x", "shape": [1, 4], "datatype": "FP64",
            "parameters": {"binary_data_size": size}, **extra}  # fmt: skip


ROW = np.array([5.1, 3.5, 1.4, 0.2], "<f8").tobytes()


@pytest.mark.parametrize(
    ("header", "blob", "length", "status", "field"),
    [
        ({"inputs": [tensor(32)]}, ROW, "0", 400, "Inference-Header-Content-Length"),
        ({"inputs": [tensor(32)]}, ROW, "99999", 400, "Inference-Header-Content-Length"),
        ({"inputs": [tensor(32)]}, ROW, "abc", 400, "Inference-Header-Content-Length"),
        ({"inputs": [tensor(40)]}, ROW, None, 422, "inputs[0].parameters.binary_data_size"),
        ({"inputs": [tensor(24)]}, ROW[:24], None, 422, "inputs[0].parameters.binary_data_size"),
        ({"inputs": [tensor(32)]}, ROW + b"\0", None, 422, "body"),
        ({"inputs": [tensor(-1)]}, ROW, None, 422, "inputs[0].parameters.binary_data_size"),
        ({"inputs": [tensor(32, data=[1, 2, 3, 4])]}, ROW, None, 422, "inputs[0].data"),
        ({"inputs": [tensor(32, datatype="FP128")]}, ROW, None, 422, "inputs[0].datatype"),
        ({"inputs": [tensor(32, shape=[2, 4])]}, ROW, None, 422,
         "inputs[0].parameters.binary_data_size"),
        # "²" (as latin-1, the bytes of a header) passes str.isdigit; int() refuses it.
        ({"inputs": [tensor(32)]}, ROW, b"\xb2", 400, "Inference-Header-Content-Length"),
        ({"inputs": [tensor(32, shape=[1.5, 4])]}, ROW, None, 422, "inputs[0].shape"),
        ({"inputs": [tensor(32, shape=["1", 4])]}, ROW, None, 422, "inputs[0].shape"),
        ({"inputs": [tensor(32, shape=[1] * 65 + [4])]}, ROW, None, 422, "inputs[0].shape"),
        ({"inputs": [tensor(32, shape=[1, 1, 4])]}, ROW, None, 422, "inputs[0].shape"),
        # Text sent to a model of numeric features.
        ({"inputs": [tensor(28, datatype="BYTES")]}, (struct.pack("<I", 3) + b"red") * 4, None,
         422, "inputs[0].datatype"),
    ],
)  # fmt: skip
async def test_inconsistent_binary_requests_name_the_field(
    client_for: ClientFactory,
    header: dict[str, Any],
    blob: bytes,
    length: str | bytes | None,
    status: int,
    field: str,
) -> None:
    body, headers = binary_request(header, blob)
    sent = {k.lower().encode(): v.encode() for k, v in headers.items()}  # bytes, as on the wire
    if length is not None:
        sent[b"inference-header-content-length"] = (
            length if isinstance(length, bytes) else length.encode()
        )
    async with client_for() as client:
        response = await client.post(INFER, content=body, headers=sent)
    assert response.status_code == status, response.text
    assert response.json()["field"] == field


def test_bytes_elements_round_trip_and_truncation_is_refused() -> None:
    words = np.array(["red", "", "grün"], dtype=object)
    raw = binary._encode(words, "BYTES")
    assert raw[:4] == struct.pack("<I", 3)
    assert binary._decode_bytes(raw, "f").tolist() == ["red", "", "grün"]
    with pytest.raises(RequestError, match="overrun"):
        binary._decode_bytes(raw[:-1], "f")
    with pytest.raises(RequestError, match="truncated"):
        binary._decode_bytes(raw + b"\1", "f")
