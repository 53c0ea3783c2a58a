"""The serving server as a process of this machine, and how the tests talk to it."""

import json
import os
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

SERVE = [sys.executable, "-m", "mlops_serving.serve"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def call(url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        raw, status = error.read(), error.code
    text = raw.decode()
    return status, json.loads(text) if text.startswith(("{", "[")) else text


def environment(built: tuple[Path, str], tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    path, digest = built
    env = {
        **os.environ,
        "MLOPS_SERVING_MODEL_URI": f"file://{path}",
        "MLOPS_SERVING_MODEL_DIGEST": digest,
        "MLOPS_SERVING_HOST": "127.0.0.1",
        "MLOPS_SERVING_PORT": str(port),
        "MLOPS_SERVING_CACHE_DIR": str(tmp_path / "cache"),
    }
    env.update(extra)
    return env


def metric(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )
