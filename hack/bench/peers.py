"""Peer servers for hack/bench_serving.py, each run in its own virtual environment.

    python peers.py kserve MODEL_FILE PORT    kserve.ModelServer with a small kserve.Model
    python peers.py bare MODEL_FILE PORT      FastAPI + orjson calling the model (the practical
                                              limit)

Both answer Open Inference Protocol v2 at /v2/models/bench/infer, like MLServer and mlops-serve.
"""

import sys
from typing import Any

import joblib
import numpy as np


def kserve_server(model_file: str, port: int) -> None:
    import kserve
    from kserve import InferOutput, InferRequest, InferResponse

    class Bench(kserve.Model):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__("bench")
            self.model = joblib.load(model_file)
            self.ready = True

        def predict(
            self, request: InferRequest, headers: Any = None, response_headers: Any = None
        ) -> InferResponse:
            rows = request.inputs[0].as_numpy()
            probabilities = self.model.predict_proba(rows)
            labels = probabilities.argmax(axis=1)
            outputs = [
                InferOutput(
                    name="predict", shape=list(labels.shape), datatype="INT64", data=labels.tolist()
                ),
                InferOutput(
                    name="predict_proba",
                    shape=list(probabilities.shape),
                    datatype="FP64",
                    data=probabilities.ravel().tolist(),
                ),
            ]
            return InferResponse(model_name="bench", infer_outputs=outputs, response_id=request.id)

    kserve.ModelServer(http_port=port, workers=1, enable_docs_url=False).start([Bench()])


def bare_server(model_file: str, port: int) -> None:
    import orjson
    import uvicorn
    from fastapi import FastAPI, Request, Response

    model = joblib.load(model_file)
    app = FastAPI()

    @app.post("/v2/models/bench/infer")
    async def infer(request: Request) -> Response:
        payload = orjson.loads(await request.body())
        tensor = payload["inputs"][0]
        rows = np.asarray(tensor["data"], dtype=np.float64).reshape(tensor["shape"])
        probabilities = model.predict_proba(rows)
        labels = probabilities.argmax(axis=1)
        body = {
            "model_name": "bench",
            "outputs": [
                {
                    "name": "predict",
                    "shape": list(labels.shape),
                    "datatype": "INT64",
                    "data": labels.tolist(),
                },
                {
                    "name": "predict_proba",
                    "shape": list(probabilities.shape),
                    "datatype": "FP64",
                    "data": probabilities.ravel().tolist(),
                },
            ],
        }
        return Response(orjson.dumps(body), media_type="application/json")

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(b'{"ready":true}', media_type="application/json")

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        access_log=False,
        log_level="warning",
        loop="uvloop",
        http="httptools",
    )


if __name__ == "__main__":
    kind, model_path, port_text = sys.argv[1:4]
    {"kserve": kserve_server, "bare": bare_server}[kind](model_path, int(port_text))
