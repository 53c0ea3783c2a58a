#!/usr/bin/env python3
"""Capture overhead, A/B in one process: the serving app with capture at sample rate 1.0
against the same app with capture off, on the same OIP v2 requests (1 and 100 rows of
the breast cancer dataset). In-process (httpx over ASGI) removes wrk's and the
network's noise; runs alternate and the table shows medians.

    python hack/bench_capture.py [--requests 300] [--repeats 5]
"""

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlops_serving import bundle
from mlops_serving.app import create_app
from mlops_serving.digest import file_digest
from mlops_serving.settings import ServingSettings


async def per_request_us(
    tarball: Path, cache: Path, rate: float, body: bytes, requests: int
) -> float:
    settings = ServingSettings(
        model_uri=f"file://{tarball}", model_digest=file_digest(tarball), cache_dir=cache,
        capture_sample_rate=rate,
    )  # fmt: skip
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://serving"
        ) as client,
    ):
        for _ in range(requests // 2):
            await client.post("/v2/models/bench/infer", content=body)
        start = time.perf_counter()
        for _ in range(requests):
            response = await client.post("/v2/models/bench/infer", content=body)
            response.raise_for_status()
        return (time.perf_counter() - start) / requests * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    data = load_breast_cancer(as_frame=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(
        data.data.to_numpy(), data.target
    )
    work = Path(tempfile.mkdtemp())
    tarball = bundle.build(model, data.data, work / "bench.tar.gz", name="bench", version="1")
    print("| rows | capture off, us/request | capture 1.0, us/request | overhead |")
    print("|---:|---:|---:|---:|")
    for rows in (1, 100):
        batch = data.data.to_numpy()[:rows]
        tensor = {
            "name": "x",
            "shape": list(batch.shape),
            "datatype": "FP64",
            "data": batch.ravel().tolist(),
        }
        body = json.dumps({"inputs": [tensor]}).encode()
        timings: dict[float, list[float]] = {0.0: [], 1.0: []}
        for repeat in range(args.repeats):
            for rate in (0.0, 1.0) if repeat % 2 == 0 else (1.0, 0.0):
                timings[rate].append(
                    asyncio.run(per_request_us(tarball, work / "cache", rate, body, args.requests))
                )
        off, on = statistics.median(timings[0.0]), statistics.median(timings[1.0])
        print(f"| {rows} | {off:.0f} | {on:.0f} | {100 * (on - off) / off:+.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
