"""torch and ONNX bundles round-trip and serve (optional extras, required in CI)."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlops_contract.digest import file_digest

from mlops_serving import bundle, packing
from mlops_serving.bundle import open_bundle
from mlops_serving.loaders import CODECS, load_model
from mlops_serving.packing import DEFAULT_FORMATS, MODEL_FILES

from .conftest import ClientFactory, Iris, require


def torch_classifier(iris: Iris) -> Any:
    torch = require("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    x = torch.tensor(iris.frame.to_numpy(), dtype=torch.float32)
    y = torch.tensor(iris.target)
    optimizer = torch.optim.Adam(module.parameters(), lr=0.05)
    for _ in range(200):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(module(x), y).backward()
        optimizer.step()
    return module


@pytest.mark.parametrize("format", ["torchscript", "torch-export"])
def test_torch_round_trip(iris: Iris, tmp_path: Path, format: bundle.Format) -> None:
    module = torch_classifier(iris)
    out = packing.build(
        module, iris.frame, tmp_path / "b", name="iris-net", version="1", format=format
    )
    manifest, profile = open_bundle(out)
    assert (manifest.framework, manifest.format, manifest.task) == (
        "pytorch",
        format,
        "classification",
    )
    predicted = load_model(out, manifest).predict(iris.frame.to_numpy()).primary
    assert (predicted == iris.target).mean() > 0.9
    assert profile.prediction is not None


def test_sklearn_as_onnx_round_trip(iris: Iris, tmp_path: Path) -> None:
    require("onnxruntime")
    require("skl2onnx")
    out = packing.build(
        iris.model, iris.frame, tmp_path / "b", name="iris", version="1", format="onnx"
    )
    manifest, _ = open_bundle(out)
    assert (manifest.framework, manifest.format) == ("sklearn", "onnx")
    rows = iris.frame.to_numpy()
    outputs = load_model(out, manifest).predict(rows)
    assert (outputs.primary == iris.model.predict(rows)).mean() > 0.98
    probabilities = outputs.tensors["probabilities"]
    assert np.allclose(probabilities, iris.model.predict_proba(rows), atol=1e-4)


def test_onnx_file_bundle(iris: Iris, tmp_path: Path) -> None:
    require("onnxruntime")
    skl2onnx = require("skl2onnx")
    onx = skl2onnx.to_onnx(
        iris.model, iris.frame.to_numpy()[:1].astype(np.float32), options={"zipmap": False}
    )
    path = tmp_path / "model.onnx"
    path.write_bytes(onx.SerializeToString())
    out = packing.build(
        path, iris.frame, tmp_path / "b.tar.gz", name="iris", version="2", framework="onnx"
    )
    manifest, _ = open_bundle(bundle.unpack(out, tmp_path / "u"))
    assert (manifest.framework, manifest.format) == ("onnx", "onnx")


async def test_torch_bundle_serves_over_the_api(
    iris: Iris, tmp_path: Path, client_for: ClientFactory
) -> None:
    out = packing.build(
        torch_classifier(iris), iris.frame, tmp_path / "net.tar.gz", name="net", version="1"
    )
    async with client_for(model_uri=f"file://{out}", model_digest=file_digest(out)) as client:
        answer = await client.post("/predict", json={"features": [5.1, 3.5, 1.4, 0.2]})
        infer = await client.post(
            "/v2/models/net/infer",
            json={
                "inputs": [
                    {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [6.7, 3.0, 5.2, 2.3]}
                ]
            },
        )
    assert answer.status_code == 200
    assert answer.json()["prediction"] == 0
    assert {o["name"] for o in infer.json()["outputs"]} == {"output", "predict"}


def test_every_format_a_bundle_is_written_in_can_be_read_back() -> None:
    """One codec per (framework, format) writes and reads; the writer's defaults and
    file names cover exactly those formats."""
    formats = {format for _, format in CODECS}
    assert set(MODEL_FILES) == formats
    assert all((framework, format) in CODECS for framework, format in DEFAULT_FORMATS.items())
