"""Fuzz the serving API from its own OpenAPI document, and its binary tensor extension
with malformed requests of our own: no input may cause a 5xx, and the server's memory
stays where it was (more than 5,000 requests in all)."""

import os
import random
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from mlops_contract.digest import file_digest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from mlops_serving import packing

from .kube import wait_until
from .processes import SERVE, call, free_port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A real mlops-serve with one worker (so its pid is the server's); URL and pid."""
    directory = tmp_path_factory.mktemp("fuzz")
    frame, target = load_iris(return_X_y=True, as_frame=True)
    out = packing.build(LogisticRegression(max_iter=500).fit(frame.to_numpy(), target), frame,
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
        yield url, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


SCHEMA_REQUESTS = 4200
"""Asked of schemathesis; it stops early on routes with few distinct inputs."""
TOTAL_REQUESTS = 5000
DATATYPES = ["FP64", "FP32", "FP16", "INT64", "INT32", "INT8", "UINT8", "BOOL", "BYTES", "X"]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def malformed_binary(rng: random.Random) -> tuple[bytes, dict[str, str]]:
    """A binary-extension request with one or more things wrong (or, by chance, none)."""
    shape = rng.choice([[1, 4], [rng.randint(0, 3), 4], [2], [1.5, 4], ["1", 4], [1] * 70, []])
    datatype = rng.choice(DATATYPES)
    size = rng.choice([0, 4, 8, 32, 33, rng.randint(0, 200), -1, 2**40])
    tensor = {"name": rng.choice(["x", "sepal length (cm)", ""]), "shape": shape,
              "datatype": datatype, "parameters": {"binary_data_size": size}}  # fmt: skip
    head = orjson.dumps({"inputs": [tensor] * rng.randint(1, 3)})
    blob = rng.randbytes(rng.choice([0, 8, 32, 64, rng.randint(0, 300)]))
    length = rng.choice([str(len(head)), str(len(head) + 3), "0", "-1", "abc", "\u00b2", "9" * 30])
    return head + blob, {"Inference-Header-Content-Length": length}


def test_no_request_causes_a_server_error_or_leaks_memory(server: tuple[str, int]) -> None:
    base_url, pid = server
    for _ in range(50):  # warm up: imports, caches and arenas that a first request fills
        call(f"{base_url}/predict", {"features": [5.1, 3.5, 1.4, 0.2]})
    before = rss_kib(pid)
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14
    failures: list[str] = []
    statuses: list[int] = []
    for operation in operations:

        @settings(
            max_examples=SCHEMA_REQUESTS // len(operations) + 1,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=operation.as_strategy())
        def fuzz(case: schemathesis.Case[Any]) -> None:
            response = case.call(base_url=base_url, timeout=10)
            statuses.append(response.status_code)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.text[:300]}")

        fuzz()
    rng = random.Random(7)
    with httpx.Client(base_url=base_url, timeout=10) as client:
        for _ in range(max(1000, TOTAL_REQUESTS - len(statuses))):
            body, headers = malformed_binary(rng)
            encoded = {k.encode(): v.encode("latin-1", "replace") for k, v in headers.items()}
            response = client.post("/v2/models/iris/infer", content=body, headers=encoded)
            statuses.append(response.status_code)
            if response.status_code >= 500:
                failures.append(f"binary {headers}: {response.text[:300]}")
    after = rss_kib(pid)
    print(
        f"\nfuzz: {len(statuses)} requests, {sum(s >= 500 for s in statuses)} answered 5xx; "
        f"RSS {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB after "
        f"({100 * (after - before) / before:+.1f}%)"
    )
    assert failures == []
    assert len(statuses) >= TOTAL_REQUESTS
    assert {200, 400, 422} <= set(statuses)  # accepted and refused inputs were generated
    assert after <= before * 1.2
