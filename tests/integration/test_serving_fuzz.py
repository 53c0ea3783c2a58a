"""Fuzz the serving API from its own OpenAPI document: no input may cause a 5xx."""

import os
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from mlops_serving import bundle
from mlops_serving.digest import file_digest

from .kube import wait_until
from .test_serving_process import SERVE, call, free_port


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("fuzz")
    frame, target = load_iris(return_X_y=True, as_frame=True)
    out = bundle.build(LogisticRegression(max_iter=500).fit(frame.to_numpy(), target), frame,
                       directory / "iris.tar.gz", name="iris", version="1")  # fmt: skip
    port = free_port()
    env = {
        **os.environ,
        "MLOPS_SERVING_MODEL_URI": f"file://{out}",
        "MLOPS_SERVING_MODEL_DIGEST": file_digest(out),
        "MLOPS_SERVING_HOST": "127.0.0.1",
        "MLOPS_SERVING_PORT": str(port),
        "MLOPS_SERVING_WORKERS": "1",
        "MLOPS_SERVING_CACHE_DIR": str(directory / "cache"),
        "MLOPS_SERVING_MAX_BATCH_SIZE": "16",
    }
    process = subprocess.Popen(SERVE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return call(f"{url}/v2/health/ready")[0] == 200
        except OSError:
            return False

    try:
        wait_until(ready, "mlops-serve to become ready", timeout=120)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_no_request_causes_a_server_error(base_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14
    failures: list[str] = []
    statuses: list[int] = []
    for operation in operations:

        @settings(
            max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        @given(case=operation.as_strategy())
        def fuzz(case: schemathesis.Case[Any]) -> None:
            response = case.call(base_url=base_url, timeout=10)
            statuses.append(response.status_code)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.text[:300]}")

        fuzz()
    assert failures == []
    assert len(statuses) >= 10 * len(operations)
    assert {200, 422} <= set(statuses)  # both accepted and refused inputs were generated
