"""`mlops-serve` as a real process: a real bundle served over HTTP on loopback."""

import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlops_contract.digest import file_digest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from tritonclient import http as httpclient

from mlops_serving import packing

from .kube import wait_until
from .processes import SERVE, call, environment, free_port, metric


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    frame, target = load_iris(return_X_y=True, as_frame=True)
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(frame.to_numpy(), target)
    out = tmp_path_factory.mktemp("serve") / "iris.tar.gz"
    packing.build(model, frame, out, name="iris", version="9")
    return out, file_digest(out)


@pytest.fixture
def server(built: tuple[Path, str], tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = environment(
        built, tmp_path, port, MLOPS_SERVING_WORKERS="2", MLOPS_SERVING_TRACK="canary"
    )
    process = subprocess.Popen(
        SERVE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                return call(f"{base}/v2/health/ready")[0] == 200
            except OSError:
                return False

        wait_until(ready, "mlops-serve to become ready", timeout=120)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def test_serves_predictions_metrics_and_capture_across_workers(server: str) -> None:
    for _ in range(20):
        status, answer = call(f"{server}/predict", {"features": [5.1, 3.5, 1.4, 0.2]})
        assert (status, answer["prediction"]) == (200, 0)
    status, answer = call(
        f"{server}/v2/models/iris/versions/9/infer",
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [2, 4],
                    "datatype": "FP64",
                    "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3],
                }
            ]
        },
    )
    assert status == 200
    assert answer["outputs"][0]["data"] == [0, 2]
    status, refused = call(f"{server}/predict", {"features": [1, 2]})
    assert (status, refused["field"]) == (422, "features")

    def counted() -> bool:
        text = call(f"{server}/metrics")[1]
        return metric(text, "mlops_requests_total", code="200", track="canary") == 21

    wait_until(counted, "metrics from both workers to add up")
    text = call(f"{server}/metrics")[1]
    assert metric(text, "mlops_request_errors_total", kind="client") == 1
    assert metric(text, "mlops_predictions_total", **{"class": "0"}) == 21

    def captured() -> Any:
        view = call(f"{server}/v2/capture")[1]
        return view if sum(w["rows"] for w in view["windows"]) == 22 else None

    view = wait_until(captured, "capture windows from both workers to merge", timeout=30)
    assert view["features"] == [
        "sepal length (cm)",
        "sepal width (cm)",
        "petal length (cm)",
        "petal width (cm)",
    ]


def test_wrong_digest_exits_non_zero_and_never_serves(
    built: tuple[Path, str], tmp_path: Path
) -> None:
    port = free_port()
    env = environment(built, tmp_path, port, MLOPS_SERVING_MODEL_DIGEST="sha256:" + "a" * 64)
    for command in ([*SERVE, "verify"], SERVE):
        result = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 1
        assert "artifact rejected" in result.stderr
        assert "does not match the pinned sha256:aaaa" in result.stderr
    with pytest.raises(urllib.error.URLError, match="Connection refused"):
        call(f"http://127.0.0.1:{port}/v2/health/live")


def test_verify_accepts_the_right_digest(built: tuple[Path, str], tmp_path: Path) -> None:
    env = environment(built, tmp_path, free_port())
    result = subprocess.run(
        [*SERVE, "verify"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "verified iris 9: sklearn/joblib, 4 features, 150 reference rows" in result.stderr


def test_missing_settings_are_named(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_SERVING_")}
    result = subprocess.run(SERVE, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "model_uri" in result.stderr


def test_an_empty_token_file_refuses_to_start(built: tuple[Path, str], tmp_path: Path) -> None:
    """Otherwise `Authorization: Bearer ` with nothing after it would be the token."""
    empty = tmp_path / "token"
    empty.write_text("\n")
    port = free_port()
    env = environment(built, tmp_path, port, MLOPS_SERVING_AUTH_TOKEN_FILE=str(empty))
    result = subprocess.run(SERVE, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "auth_token_file" in result.stderr
    assert "the token file is empty" in result.stderr
    with pytest.raises(urllib.error.URLError, match="Connection refused"):
        call(f"http://127.0.0.1:{port}/v2/health/live")


def test_triton_client_speaks_binary_tensors_with_the_server(server: str) -> None:
    """NVIDIA's own OIP client (tritonclient.http) sends and reads binary tensor data."""
    frame, _ = load_iris(return_X_y=True, as_frame=True)
    rows = frame.to_numpy()[:6]
    tensor = httpclient.InferInput("x", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows, binary_data=True)
    wanted = [
        httpclient.InferRequestedOutput("predict", binary_data=True),
        httpclient.InferRequestedOutput("predict_proba", binary_data=False),
    ]
    connection = httpclient.InferenceServerClient(server.removeprefix("http://"))
    try:
        assert connection.is_server_ready()
        assert connection.is_model_ready("iris")
        result = connection.infer("iris", [tensor], outputs=wanted)
    finally:
        connection.close()
    answer = result.get_response()
    predict = next(o for o in answer["outputs"] if o["name"] == "predict")
    assert predict["parameters"]["binary_data_size"] == 6 * 8
    assert result.as_numpy("predict").tolist() == [0, 0, 0, 0, 0, 0]  # iris' first rows: setosa
    proba = result.as_numpy("predict_proba")
    assert proba.shape == (6, 3)
    assert proba.sum(axis=1) == pytest.approx([1.0] * 6)
