"""The data plane without HTTP: payloads in, documents and binary tensor data out."""

from pathlib import Path

import numpy as np
import pytest
from mlops_contract.settings import ServingSettings

from mlops_serving.dataplane import (
    INFER,
    PREDICT,
    PREDICT_BATCH,
    DataPlane,
    ModelError,
    State,
    load_bundle,
)
from mlops_serving.requests import RequestError

from .conftest import BuiltBundle, Iris


@pytest.fixture
def plane(tmp_path: Path, iris_bundle: BuiltBundle) -> DataPlane:
    settings = ServingSettings(
        model_uri=f"file://{iris_bundle.path}",
        model_digest=iris_bundle.digest,
        cache_dir=tmp_path / "cache",
        capture_sample_rate=1.0,
    )
    state = State(settings)
    state.serve(load_bundle(settings))
    return DataPlane(state)


async def test_each_protocol_parses_predicts_and_encodes(plane: DataPlane, iris: Iris) -> None:
    rows = iris.frame.to_numpy()[:3]
    expected = iris.model.predict(rows).tolist()
    one, blob = await plane.infer(PREDICT, {"features": rows[0].tolist()})
    assert (one["prediction"], blob) == (expected[0], b"")
    batch, _ = await plane.infer(PREDICT_BATCH, {"instances": rows.tolist()})
    assert np.asarray(batch["predictions"]).tolist() == expected
    tensor = {"name": "x", "shape": [3, 4], "datatype": "FP64", "data": rows.ravel().tolist()}
    wanted = [{"name": "predict", "parameters": {"binary_data": True}}]
    document, blob = await plane.infer(INFER, {"inputs": [tensor], "outputs": wanted, "id": "r1"})
    assert (document["model_name"], document["id"]) == ("iris", "r1")
    assert document["outputs"][0]["parameters"]["binary_data_size"] == len(blob)
    assert np.frombuffer(blob, "<i8").tolist() == expected
    # What was predicted is counted and captured, by the plane, not by a route.
    (window,) = plane.state.capture.capture.snapshot()
    assert window.rows == 1 + 3 + 3


async def test_bad_payloads_name_the_field_and_model_errors_carry_only_an_id(
    plane: DataPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(RequestError) as refused:
        await plane.infer(PREDICT, {"features": [1.0, 2.0]})
    assert (refused.value.status, refused.value.field) == (422, "features")
    with pytest.raises(RequestError) as unknown:
        plane.check_model("wine", None)
    assert (unknown.value.status, unknown.value.field) == (404, "name")
    plane.check_model("iris", "1")

    async def broken(_: object) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(plane.state, "runner", broken)
    with pytest.raises(ModelError) as failed:
        await plane.infer(PREDICT, {"features": [1.0, 2.0, 3.0, 4.0]})
    assert "secret" not in str(failed.value)
    assert failed.value.request_id in str(failed.value)
