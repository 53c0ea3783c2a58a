"""The serving API in-process: OIP v2, /predict routes, errors, limits, auth, metrics."""

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mlops_contract.settings import ServingSettings
from prometheus_client.parser import text_string_to_metric_families

from mlops_serving import app, dataplane
from mlops_serving.app import create_app
from mlops_serving.bundle import open_bundle, unpack

from .conftest import BuiltBundle, ClientFactory, Iris

SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}


async def test_predict_one_row_as_list_and_as_object(client_for: ClientFactory, iris: Iris) -> None:
    async with client_for() as client:
        first = (await client.post("/predict", json={"features": SETOSA})).json()
        second = (await client.post("/predict", json={"features": VIRGINICA})).json()
    assert first["prediction"] == iris.model.predict([SETOSA])[0] == 0
    assert second["prediction"] == 2
    assert first["classes"] == [0, 1, 2]
    assert first["probabilities"] == pytest.approx(iris.model.predict_proba([SETOSA])[0].tolist())


async def test_predict_batch_matches_the_model(client_for: ClientFactory, iris: Iris) -> None:
    rows = iris.frame.to_numpy()[::10]
    async with client_for() as client:
        response = await client.post("/predict-batch", json={"instances": rows.tolist()})
    assert response.status_code == 200
    assert response.json()["predictions"] == iris.model.predict(rows).tolist()


async def test_oip_v2_infer_with_matrix_and_per_feature_inputs(
    client_for: ClientFactory, iris: Iris
) -> None:
    rows = iris.frame.to_numpy()[:3]
    matrix = {
        "id": "r1",
        "inputs": [
            {"name": "x", "shape": [3, 4], "datatype": "FP64", "data": rows.ravel().tolist()}
        ],
    }
    columns = {
        "parameters": {"trace": "abc"},
        "inputs": [
            {
                "name": name,
                "shape": [3],
                "datatype": "FP32",
                "data": iris.frame[name].to_numpy()[:3].tolist(),
            }
            for name in reversed(iris.frame.columns)
        ],
        "outputs": [{"name": "predict"}],
    }
    async with client_for() as client:
        by_matrix = (await client.post("/v2/models/iris/infer", json=matrix)).json()
        by_column = (await client.post("/v2/models/iris/versions/1/infer", json=columns)).json()
    assert by_matrix["id"] == "r1"
    assert by_matrix["model_name"] == "iris"
    assert by_matrix["model_version"] == "1"
    outputs = {o["name"]: o for o in by_matrix["outputs"]}
    assert outputs["predict"] == {
        "name": "predict",
        "shape": [3],
        "datatype": "INT64",
        "data": [0, 0, 0],
    }
    assert outputs["predict_proba"]["shape"] == [3, 3]
    assert by_column["parameters"] == {"trace": "abc"}
    assert [o["name"] for o in by_column["outputs"]] == ["predict"]
    assert by_column["outputs"][0]["data"] == [0, 0, 0]


async def test_health_metadata_and_model_info(client_for: ClientFactory) -> None:
    async with client_for() as client:
        assert (await client.get("/v2/health/live")).json() == {"live": True}
        assert (await client.get("/v2/health/ready")).json() == {"ready": True}
        assert (await client.get("/v2/models/iris/ready")).json() == {"name": "iris", "ready": True}
        assert (await client.get("/v2/models/iris/versions/1/ready")).status_code == 200
        meta = (await client.get("/v2/models/iris")).json()
        assert meta["platform"] == "sklearn"
        assert [i["name"] for i in meta["inputs"]] == [
            "sepal_length",
            "sepal_width",
            "petal_length",
            "petal_width",
        ]
        assert (await client.get("/v2/models/other")).status_code == 404
        assert (await client.get("/v2/models/iris/versions/9")).status_code == 404
        info = (await client.get("/model-info")).json()
        assert info["framework"] == "sklearn"
        assert info["files"]["model.joblib"].startswith("sha256:")
        assert info["track"] == "stable"


INFER = "/v2/models/iris/infer"


def tensor(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "x", "shape": [1, 4], "datatype": "FP64", "data": SETOSA}
    base.update(overrides)
    return {"inputs": [base]}


# (route, body: JSON value, or raw bytes, expected status, field the answer must name)
MALFORMED: list[tuple[str, Any, int, str]] = [
    ("/predict", b"{not json", 400, "body"),
    ("/predict", b"", 400, "body"),
    ("/predict", [], 422, "features"),
    ("/predict", {}, 422, "features"),
    ("/predict", {"features": "5.1"}, 422, "features"),
    ("/predict", {"features": [5.1, 3.5]}, 422, "features"),
    ("/predict", {"features": [5.1, 3.5, 1.4, "x"]}, 422, "features"),
    ("/predict", {"features": [5.1, 3.5, 1.4, [0.2]]}, 422, "features"),
    ("/predict", {"features": [5.1, 3.5, 1.4, None]}, 422, "features"),
    (
        "/predict",
        {"features": {"sepal_length": 1, "sepal_width": 2, "petal_length": 3}},
        422,
        "features.petal_width",
    ),
    ("/predict", {"features": {**VIRGINICA, "colour": 1}}, 422, "features.colour"),
    ("/predict-batch", {"instances": []}, 422, "instances"),
    ("/predict-batch", {"instances": "rows"}, 422, "instances"),
    ("/predict-batch", {"instances": [SETOSA, [1, 2]]}, 422, "instances[1]"),
    (INFER, {}, 422, "inputs"),
    (INFER, {"inputs": []}, 422, "inputs"),
    (INFER, {"inputs": ["x"]}, 422, "inputs[0]"),
    (INFER, tensor(name=""), 422, "inputs[0].name"),
    (INFER, tensor(shape=[1, -4]), 422, "inputs[0].shape"),
    (INFER, tensor(shape="1x4"), 422, "inputs[0].shape"),
    (INFER, tensor(datatype="FLOAT"), 422, "inputs[0].datatype"),
    (INFER, tensor(data="5.1"), 422, "inputs[0].data"),
    (INFER, tensor(shape=[2, 4]), 422, "inputs[0].data"),
    (INFER, tensor(shape=[1, 3], data=[1, 2, 3]), 422, "inputs[0].shape"),
    (INFER, tensor(datatype="INT32", data=[1.5, 2, 3, 4]), 422, "inputs[0].data"),
    (INFER, tensor(datatype="BYTES"), 422, "inputs[0].data"),
    (INFER, tensor(datatype="BYTES", data=["a", "b", "c", "d"]), 422, "inputs[0].datatype"),
    (INFER, tensor(shape=[1, 1, 4]), 422, "inputs[0].shape"),
    (
        INFER,
        {"inputs": [{"name": "petal_width", "shape": [1], "datatype": "FP64", "data": [1.0]}]},
        422,
        "inputs",
    ),
    (
        INFER,
        {"inputs": [{"name": "colour", "shape": [1], "datatype": "FP64", "data": [1.0]}] * 2},
        422,
        "inputs[0].name",
    ),
    (INFER, {**tensor(), "outputs": [{"name": "logits"}]}, 422, "outputs"),
    (
        INFER,
        b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, NaN]}]}',
        400,
        "body",
    ),
    (INFER, tensor(datatype="INT8", data=[1, 2, 3, 300]), 422, "inputs[0].data"),
    (INFER, tensor(datatype="BOOL", data=[1, 0, 1, 0]), 422, "inputs[0].data"),
    (INFER, tensor(data=[[5.1, 3.5], [1.4]]), 422, "inputs[0].data"),
]


@pytest.mark.parametrize(("route", "body", "status", "field"), MALFORMED, ids=lambda v: str(v)[:40])
async def test_malformed_requests_get_a_4xx_naming_the_field(
    client_for: ClientFactory, route: str, body: Any, status: int, field: str
) -> None:
    async with client_for() as client:
        if isinstance(body, bytes):
            response = await client.post(
                route, content=body, headers={"content-type": "application/json"}
            )
        else:
            response = await client.post(route, json=body)
        assert response.status_code == status, response.text
        assert response.json()["field"] == field
        assert response.json()["error"]
        assert (await client.post("/predict", json={"features": SETOSA})).status_code == 200


async def test_body_limit_answers_413(client_for: ClientFactory) -> None:
    async with client_for(max_body_bytes=1024) as client:
        big = {"instances": [SETOSA] * 200}
        response = await client.post("/predict-batch", json=big)
        assert response.status_code == 413
        assert response.json()["field"] == "body"

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"instances": ['
            for _ in range(200):
                yield b"[1,2,3,4],"
            yield b"[1,2,3,4]]}"

        chunked = await client.post("/predict-batch", content=chunks())
        assert "content-length" not in chunked.request.headers
        assert chunked.status_code == 413


async def test_bearer_auth_guards_all_but_health_and_metrics(
    client_for: ClientFactory, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    async with client_for(auth_token_file=token_file) as client:
        denied = await client.post("/predict", json={"features": SETOSA})
        wrong = await client.post(
            "/predict", json={"features": SETOSA}, headers={"Authorization": "Bearer nope"}
        )
        allowed = await client.post(
            "/predict", json={"features": SETOSA}, headers={"Authorization": "Bearer s3cret"}
        )
        infer = await client.post(INFER, json=tensor())
        assert (denied.status_code, wrong.status_code, allowed.status_code, infer.status_code) == (
            401,
            401,
            200,
            401,
        )
        assert denied.json()["field"] == "authorization"
        for route in ("/v2/health/ready", "/v2/health/live", "/v2/models/iris/ready", "/metrics"):
            assert (await client.get(route)).status_code == 200, route
        # Captured rows are users' data; the manifest and profile describe the training.
        guarded = ("/v2/capture", "/model-info", "/v2/models/iris", "/v2/profile")
        for route in guarded:
            assert (await client.get(route)).status_code == 401, route
            with_token = await client.get(route, headers={"Authorization": "Bearer s3cret"})
            assert with_token.status_code == 200, route


async def test_model_exception_is_a_500_with_request_id_and_serving_goes_on(
    client_for: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async with client_for() as client:
        state = client._transport.app.state.serving  # type: ignore[attr-defined]
        real_predict = state.runner.model.predict
        calls = {"n": 0}

        def flaky(rows: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("boom")
            return real_predict(rows)

        state.runner.model.predict = flaky
        failed = await client.post("/predict", json={"features": SETOSA})
        assert failed.status_code == 500
        request_id = failed.json()["requestId"]
        assert len(request_id) == 32
        assert request_id in caplog.text
        assert "boom" not in failed.text
        assert (await client.post("/predict", json={"features": SETOSA})).status_code == 200
        metrics = (await client.get("/metrics")).text
        labels = {"model": "iris", "version": "1", "track": "stable"}
        assert sample(metrics, "mlops_request_errors_total", kind="model", **labels) == 1


async def test_too_many_rows_answer_413_before_they_are_parsed(client_for: ClientFactory) -> None:
    rows = [SETOSA] * 11
    infer = {"inputs": [{"name": "x", "shape": [11, 4], "datatype": "FP64",
                         "data": [v for row in rows for v in row]}]}  # fmt: skip
    async with client_for(max_rows=10) as client:
        batch = await client.post("/predict-batch", json={"instances": rows})
        tensor = await client.post(INFER, json=infer)
        within = await client.post("/predict-batch", json={"instances": rows[:10]})
    assert (batch.status_code, batch.json()["field"]) == (413, "instances")
    assert "at most 10" in batch.json()["error"]
    assert (tensor.status_code, tensor.json()["field"]) == (413, "inputs[0].shape")
    assert within.status_code == 200


async def test_a_request_the_server_fails_to_check_is_a_counted_500(
    client_for: ClientFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unchecked(*_: Any) -> Any:
        raise ValueError("could not convert string to float: 'x'")

    monkeypatch.setattr(app, "PREDICT", dataclasses.replace(dataplane.PREDICT, parse=unchecked))
    async with client_for() as client:
        failed = await client.post("/predict", json={"features": SETOSA})
        metrics = (await client.get("/metrics")).text
    assert failed.status_code == 500
    assert failed.json()["requestId"] in caplog.text
    assert "convert" not in failed.text
    labels = {"model": "iris", "version": "1", "track": "stable"}
    assert sample(metrics, "mlops_requests_total", code="500", route="predict", **labels) == 1


async def test_metrics_count_requests_latency_classes_and_capture(
    client_for: ClientFactory,
) -> None:
    async with client_for(track="canary") as client:
        for _ in range(3):
            await client.post("/predict", json={"features": SETOSA})
        await client.post("/predict-batch", json={"instances": [SETOSA, list(VIRGINICA.values())]})
        await client.post("/predict", json={"features": []})
        text = (await client.get("/metrics")).text
    base = {"model": "iris", "version": "1", "track": "canary"}
    assert sample(text, "mlops_requests_total", code="200", route="predict", **base) == 3
    assert sample(text, "mlops_request_errors_total", kind="client", **base) == 1
    assert sample(text, "mlops_request_duration_seconds_count", route="predict", **base) == 4
    assert sample(text, "mlops_predictions_total", **{"class": "0"}, **base) == 4
    assert sample(text, "mlops_predictions_total", **{"class": "2"}, **base) == 1
    assert sample(text, "mlops_capture_rows_total", **base) == 5
    assert sample(text, "mlops_requests_in_flight", **base) == 0
    assert sample(text, "mlops_batch_rows_sum", **base) == 5


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition; fails if absent."""
    for family in text_string_to_metric_families(text):
        for item in family.samples:
            if item.name == name and item.labels == labels:
                return float(item.value)
    raise AssertionError(f"no sample {name}{labels}")


async def test_capture_endpoint_bins_traffic_on_the_profile(
    client_for: ClientFactory, iris: Iris, iris_bundle: BuiltBundle, tmp_path: Path
) -> None:
    _, profile = open_bundle(unpack(iris_bundle.path, tmp_path / "unpacked"))
    async with client_for(capture_reservoir=20) as client:
        await client.post("/predict-batch", json={"instances": iris.frame.to_numpy().tolist()})
        captured = (await client.get("/v2/capture")).json()
    assert captured["features"] == list(iris.frame.columns)
    (window,) = captured["windows"]
    assert window["rows"] == 150
    assert len(window["reservoir"]) == 20
    # The reference data, binned live on its own profile, gives the profile's counts back.
    for feature in profile.features:
        assert window["features"][feature.name] == feature.counts
    assert profile.prediction is not None
    assert window["prediction"] == profile.prediction.counts


async def test_profile_route_serves_the_bundles_profile_behind_the_token(
    client_for: ClientFactory, iris_bundle: BuiltBundle, tmp_path: Path
) -> None:
    _, profile = open_bundle(unpack(iris_bundle.path, tmp_path / "unpacked"))
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    async with client_for(auth_token_file=token_file) as client:
        denied = await client.get("/v2/profile")
        served = await client.get("/v2/profile", headers={"Authorization": "Bearer s3cret"})
    assert (denied.status_code, denied.json()["field"]) == (401, "authorization")
    assert served.status_code == 200
    assert type(profile).model_validate(served.json()) == profile


async def test_captured_bins_are_exported_as_counters_only_when_asked(
    client_for: ClientFactory,
) -> None:
    async with client_for() as client:
        await client.post("/predict", json={"features": SETOSA})
        assert "mlops_capture_bins" not in (await client.get("/metrics")).text
    async with client_for(capture_metrics=True) as client:
        for _ in range(3):
            await client.post("/predict", json={"features": SETOSA})
        text = (await client.get("/metrics")).text
        view = (await client.get("/v2/capture")).json()
    exported: dict[str, dict[int, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "mlops_capture_bins_total":
                feature = exported.setdefault(sample.labels["feature"], {})
                feature[int(sample.labels["bin"])] = sample.value
            elif sample.name == "mlops_capture_binned_rows_total":
                assert sample.value == 3
    (window,) = view["windows"]
    assert {
        name: [counts.get(i, 0) for i in range(len(counts))] for name, counts in exported.items()
    } == window["features"]


async def test_sampling_zero_captures_nothing(client_for: ClientFactory) -> None:
    async with client_for(capture_sample_rate=0.0) as client:
        await client.post("/predict", json={"features": SETOSA})
        assert (await client.get("/v2/capture")).json()["windows"] == []


async def test_unverifiable_artifact_leaves_server_not_ready(
    client_for: ClientFactory, iris_bundle: BuiltBundle
) -> None:
    wrong = "sha256:" + "0" * 64
    async with client_for(model_digest=wrong) as client:
        ready = await client.get("/v2/health/ready")
        assert ready.status_code == 503
        assert "does not match the pinned" in ready.json()["error"]
        assert (await client.post("/predict", json={"features": SETOSA})).status_code == 503
        assert (await client.post(INFER, json=tensor())).status_code == 503
        assert (await client.get("/v2/health/live")).status_code == 200


async def test_batching_joins_concurrent_requests(client_for: ClientFactory) -> None:
    import asyncio  # noqa: PLC0415

    async with client_for(max_batch_size=64, max_latency_ms=50) as client:
        state = client._transport.app.state.serving  # type: ignore[attr-defined]
        real_predict = state.runner.model.predict
        sizes: list[int] = []

        def recording(rows: Any) -> Any:
            sizes.append(len(rows))
            return real_predict(rows)

        state.runner.model.predict = recording
        answers = await asyncio.gather(
            *(client.post("/predict", json={"features": SETOSA}) for _ in range(10)),
            client.post("/predict-batch", json={"instances": [list(VIRGINICA.values())] * 5}),
        )
    assert [a.status_code for a in answers] == [200] * 11
    assert [a.json()["prediction"] for a in answers[:10]] == [0] * 10
    assert answers[10].json()["predictions"] == [2] * 5
    assert sum(sizes) == 15
    assert len(sizes) < 11
    assert max(sizes) > 1


def test_openapi_documents_the_inference_bodies() -> None:
    spec = create_app(ServingSettings(model_uri="file:///nowhere")).openapi()
    body = spec["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["required"] == ["inputs"]
    assert "/predict" in spec["paths"]
    versioned = spec["paths"]["/v2/models/{name}/versions/{version}/infer"]["post"]
    assert [(p["name"], p["in"], p["required"]) for p in versioned["parameters"]] == [
        ("name", "path", True),
        ("version", "path", True),
    ]
