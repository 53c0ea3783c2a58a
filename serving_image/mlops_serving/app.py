"""The serving API: Open Inference Protocol v2, /predict routes, health, metrics, capture.

Handlers only translate HTTP: bodies are parsed with orjson, checked by
requests.Features, run by runner.Runner, and answered with orjson. One mapping
turns exceptions into statuses: RequestError -> its 4xx naming the field; any
model exception -> 500 with a request id (logged with its traceback), after
which the server keeps serving.
"""

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from mlops_contract.profile import Profile
from mlops_contract.settings import ServingSettings
from starlette.concurrency import run_in_threadpool

from . import binary
from .artifacts import materialize
from .bundle import Manifest, open_bundle
from .capture import Capture, SharedCapture
from .loaders import Model, Outputs, load_model
from .metrics import Metrics, capture_exposition
from .requests import Features, RequestError, infer_outputs
from .runner import Runner, time_call

log = logging.getLogger("mlops_serving")
JSON = "application/json"


@dataclass
class LoadedBundle:
    """A verified bundle and its loaded model."""

    manifest: Manifest
    profile: Profile
    model: Model
    directory: Path


def fetch_artifact(settings: ServingSettings) -> Path:
    """The configured artifact, fetched (within the deadline and the byte cap), verified
    and unpacked: its bundle directory."""
    credentials = (
        settings.artifact_credentials_file.read_text()
        if settings.artifact_credentials_file
        else None
    )
    return materialize(
        settings.model_uri,
        settings.model_digest,
        settings.cache_dir,
        settings.pvc_root,
        credentials,
        timeout=settings.artifact_timeout_seconds,
        max_bytes=settings.artifact_max_bytes,
    )


def load_bundle(settings: ServingSettings) -> LoadedBundle:
    """Fetch, verify and load the configured artifact; raises with a clear message."""
    directory = fetch_artifact(settings)
    manifest, profile = open_bundle(directory)
    return LoadedBundle(manifest, profile, load_model(directory, manifest), directory)


class State:
    """What the handlers share; `ready` only once the model is loaded and warmed up."""

    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self.ready = False
        self.error: str | None = None
        self.token = (
            settings.auth_token_file.read_text().strip().encode()
            if settings.auth_token_file
            else None
        )
        self.bundle: LoadedBundle | None = None

    def serve(self, bundle: LoadedBundle) -> None:
        settings = self.settings
        manifest = bundle.manifest
        self.bundle = bundle
        self.name = settings.model_name or manifest.name
        self.version = settings.model_version or manifest.version
        self.features = Features(manifest, settings.max_rows)
        sample = _sample_rows(bundle.profile, self.features)
        inline = time_call(bundle.model, sample[:1]) * 1000 < settings.inline_threshold_ms
        self.runner = Runner(bundle.model, inline, settings.max_batch_size, settings.max_latency_ms)
        prediction_edges = bundle.profile.prediction.edges if bundle.profile.prediction else []
        self.metrics = Metrics(
            self.name,
            self.version,
            settings.track,
            bundle.model.classes,
            prediction_edges,
            multiprocess=settings.prometheus_multiproc_dir is not None,
        )
        if settings.capture_dir is not None:
            settings.capture_dir.mkdir(parents=True, exist_ok=True)
        self.capture = SharedCapture(
            Capture(
                bundle.profile,
                sample_rate=settings.capture_sample_rate,
                window_seconds=settings.capture_window_seconds,
                windows=settings.capture_windows,
                reservoir=settings.capture_reservoir,
            ),
            settings.capture_dir,
        )
        self.capturing = settings.capture_sample_rate > 0
        self.classes = [
            c if isinstance(c, int | float | str | bool) else str(c) for c in bundle.model.classes
        ]
        self.ready = True
        log.info(
            "serving %s %s (%s, %s)",
            self.name,
            self.version,
            manifest.framework,
            "inline" if inline else "thread",
        )

    @property
    def manifest(self) -> Manifest:
        if self.bundle is None:
            raise RuntimeError("no model loaded")
        return self.bundle.manifest

    def features_of(self) -> Features:
        return self.features

    def fail(self, error: Exception) -> None:
        self.error = str(error)
        log.error("model not loaded: %s", error)


def _sample_rows(profile: Profile, features: Features) -> npt.NDArray[Any]:
    """A few plausible rows (feature means or top categories) to time and warm the model."""
    row = [
        (f.mean if f.mean is not None else 0.0)
        if f.kind == "numeric"
        else (f.categories[0] if f.categories else "")
        for f in (profile.feature(name) for name in features.names)
    ]
    return np.array([row] * 4, dtype=features.dtype)


def _json(content: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), status, media_type=JSON
    )


def _error(status: int, message: str, **extra: Any) -> Response:
    return _json({"error": message, **extra}, status)


INFER_BODY = {
    "content": {
        JSON: {
            "schema": {
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "id": {"type": "string"},
                    "parameters": {"type": "object"},
                    "inputs": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "shape", "datatype", "data"],
                            "properties": {
                                "name": {"type": "string"},
                                "shape": {"type": "array", "items": {"type": "integer"}},
                                "datatype": {"type": "string"},
                                "parameters": {"type": "object"},
                                "data": {"type": "array"},
                            },
                        },
                    },
                    "outputs": {
                        "type": "array",
                        "items": {"type": "object", "properties": {"name": {"type": "string"}}},
                    },
                },
            }
        }
    },
    "required": True,
}
FEATURES_SCHEMA = {"oneOf": [{"type": "array"}, {"type": "object"}]}
PREDICT_BODY = {
    "content": {
        JSON: {
            "schema": {
                "type": "object",
                "required": ["features"],
                "properties": {"features": FEATURES_SCHEMA},
            }
        }
    },
    "required": True,
}
PREDICT_BATCH_BODY = {
    "content": {
        JSON: {
            "schema": {
                "type": "object",
                "required": ["instances"],
                "properties": {"instances": {"type": "array", "items": FEATURES_SCHEMA}},
            }
        }
    },
    "required": True,
}


class DirectRoute(APIRoute):
    """A route whose endpoint takes the Request and its path parameters as strings.

    FastAPI solves an endpoint's dependencies on every request: about a fifth of a
    one-row prediction's time outside the model. The inference endpoints read and
    check their bodies themselves, so this route calls them directly. OpenAPI still
    comes from the endpoint's signature and `openapi_extra`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            response: Response = await endpoint(request, **request.path_params)
            return response

        return handle


Endpoint = Callable[..., Coroutine[Any, Any, Response]]
Parser = Callable[[Any], npt.NDArray[Any]]
Answer = Callable[[Outputs, Any], Any]


class Handlers:
    """Request handling shared by the routes: body limits, auth, the predict path."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.limit = state.settings.max_body_bytes

    async def read_json(self, request: Request) -> Any:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            raise RequestError(413, "body", f"larger than the {self.limit}-byte limit")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.limit:
                raise RequestError(413, "body", f"larger than the {self.limit}-byte limit")
        header = request.headers.get(binary.HEADER)
        if header is not None:
            return binary.split(bytes(body), header)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise RequestError(400, "body", f"malformed JSON: {error}") from None

    def authorize(self, request: Request) -> None:
        token = self.state.token
        if token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token):
            raise RequestError(401, "authorization", "a valid bearer token is required")

    def refused(self, request: Request) -> Response | None:
        """Not ready, or no valid token where one is set: the answer to send instead."""
        if refused := self.not_ready():
            return refused
        try:
            self.authorize(request)
        except RequestError as error:
            return _error(error.status, error.message, field=error.field)
        return None

    def not_ready(self) -> Response | None:
        if self.state.ready:
            return None
        return _error(503, f"model not ready: {self.state.error or 'loading'}")

    def check_model(self, name: str, version: str | None) -> Response | None:
        state = self.state
        if refused := self.not_ready():
            return refused
        if name != state.name:
            return _error(
                404,
                f"model {name!r} is not served here; this server serves {state.name!r}",
                field="name",
            )
        if version is not None and version != state.version:
            return _error(
                404, f"version {version!r} of {name!r} is not served here", field="version"
            )
        return None

    async def predict(
        self, route: str, request: Request, parse: Parser, answer: Answer
    ) -> Response:
        start = time.perf_counter()
        if refused := self.not_ready():
            return refused
        state = self.state
        metrics = state.metrics
        metrics.in_flight.inc()
        code = 200
        try:
            self.authorize(request)
            payload = await self.read_json(request)
            rows = parse(payload)
            try:
                outputs = await state.runner(rows)
            except Exception:
                request_id = uuid.uuid4().hex
                log.exception("model error (request %s)", request_id)
                code = 500
                return _error(500, "the model failed on this request", requestId=request_id)
            metrics.batch_rows.observe(len(rows))
            metrics.predictions(outputs.class_index, outputs.primary)
            if state.capturing and state.capture.capture.sampled():
                state.capture.capture.record(rows, outputs.primary)
                metrics.captured_rows.inc(len(rows))
            answered = answer(outputs, payload)
            return answered if isinstance(answered, Response) else _json(answered)
        except RequestError as error:
            code = error.status
            return _error(error.status, error.message, field=error.field)
        except Exception:
            # A request this server failed to check: a bug, counted as the 500 it is.
            request_id = uuid.uuid4().hex
            log.exception("error on a request (request %s)", request_id)
            code = 500
            return _error(500, "the server failed on this request", requestId=request_id)
        finally:
            metrics.in_flight.dec()
            metrics.observe(route, code, time.perf_counter() - start)

    def answer_one(self, outputs: Outputs, _: Any) -> Any:
        proba = _probabilities(outputs)
        classes = self.state.classes or None
        return {
            "prediction": outputs.primary[0],
            "probabilities": proba[0] if proba else None,
            "classes": classes,
        }

    def answer_batch(self, outputs: Outputs, _: Any) -> Any:
        classes = self.state.classes or None
        return {
            "predictions": outputs.primary,
            "probabilities": _probabilities(outputs),
            "classes": classes,
        }

    def answer_infer(self, outputs: Outputs, payload: Any) -> Any:
        tensors = infer_outputs(outputs.tensors, payload.get("outputs"))
        everything, named = binary.wants_binary(payload)
        blob = b""
        if everything or named:
            tensors, blob = binary.encode(tensors, outputs.tensors, everything, named)
        response: dict[str, Any] = {
            "model_name": self.state.name,
            "model_version": self.state.version,
            "outputs": tensors,
        }
        if isinstance(payload.get("id"), str):
            response["id"] = payload["id"]
        if isinstance(payload.get("parameters"), dict):
            response["parameters"] = payload["parameters"]
        if not blob:
            return response
        head = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
        return Response(
            head + blob,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(len(head))},
        )

    def metadata(self) -> dict[str, Any]:
        state = self.state
        signature = state.manifest.signature
        return {
            "name": state.name,
            "versions": [state.version],
            "platform": state.manifest.framework,
            "inputs": [t.model_dump() for t in signature.inputs],
            "outputs": [t.model_dump() for t in signature.outputs],
        }


def _probabilities(outputs: Outputs) -> Any:
    proba = outputs.tensors.get("predict_proba")
    return proba.tolist() if proba is not None else None


def create_app(settings: ServingSettings, bundle: LoadedBundle | None = None) -> FastAPI:
    """The FastAPI app. Without `bundle`, the artifact is loaded after start-up: until
    then, and for good if loading fails, readiness says why and inference answers 503."""
    state = State(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        flusher = asyncio.get_running_loop().create_task(_flush_capture(state))
        if bundle is not None:
            state.serve(bundle)
        else:
            try:
                state.serve(await run_in_threadpool(load_bundle, settings))
            except Exception as error:  # noqa: BLE001 - any load failure leaves the server not ready
                state.fail(error)
        yield
        flusher.cancel()
        if state.ready:
            await state.runner.close()

    app = FastAPI(
        title="mlops-serving", version="1", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.serving = state
    handlers = Handlers(state)
    _inference_routes(app, handlers)
    _info_routes(app, handlers)
    return app


def _inference_routes(app: FastAPI, h: Handlers) -> None:
    """The inference routes, OIP v2 first: routes are matched in order."""
    features = h.state.features_of

    def post(path: str, body: dict[str, Any]) -> Callable[[Endpoint], Endpoint]:
        def add(endpoint: Endpoint) -> Endpoint:
            app.router.add_api_route(
                path,
                endpoint,
                methods=["POST"],
                openapi_extra={"requestBody": body},
                route_class_override=DirectRoute,
            )
            return endpoint

        return add

    async def infer(request: Request, name: str, version: str | None) -> Response:
        if refused := h.check_model(name, version):
            return refused
        return await h.predict("infer", request, lambda p: features().from_infer(p), h.answer_infer)

    @post("/v2/models/{name}/infer", INFER_BODY)
    async def infer_latest(request: Request, name: str) -> Response:
        """Open Inference Protocol v2 inference."""
        return await infer(request, name, None)

    @post("/v2/models/{name}/versions/{version}/infer", INFER_BODY)
    async def infer_version(request: Request, name: str, version: str) -> Response:
        """Open Inference Protocol v2 inference on a named version."""
        return await infer(request, name, version)

    @post("/predict", PREDICT_BODY)
    async def predict_one(request: Request) -> Response:
        """One row: {"features": [v, ...] | {name: v}} -> prediction and probabilities."""
        return await h.predict(
            "predict", request, lambda p: features().from_predict(p), h.answer_one
        )

    @post("/predict-batch", PREDICT_BATCH_BODY)
    async def predict_batch(request: Request) -> Response:
        """Many rows: {"instances": [row, ...]} -> predictions and probabilities."""
        return await h.predict(
            "predict-batch", request, lambda p: features().from_predict_batch(p), h.answer_batch
        )


def _info_routes(app: FastAPI, h: Handlers) -> None:
    state = h.state

    @app.get("/v2/models/{name}")
    async def model_metadata(request: Request, name: str) -> Response:
        """OIP v2 model metadata (the token, where one is set)."""
        return h.refused(request) or h.check_model(name, None) or _json(h.metadata())

    @app.get("/v2/models/{name}/versions/{version}")
    async def model_version_metadata(request: Request, name: str, version: str) -> Response:
        """OIP v2 model metadata for a version (the token, where one is set)."""
        return h.refused(request) or h.check_model(name, version) or _json(h.metadata())

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> Response:
        """OIP v2 model readiness."""
        return h.check_model(name, None) or _json({"name": name, "ready": True})

    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_version_ready(name: str, version: str) -> Response:
        """OIP v2 model readiness for a version."""
        return h.check_model(name, version) or _json({"name": name, "ready": True})

    @app.get("/v2/health/live")
    async def live() -> Response:
        """The process answers (OIP v2)."""
        return _json({"live": True})

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        """The model is loaded and warmed up (OIP v2); 503 with the reason otherwise."""
        if state.ready:
            return _json({"ready": True})
        return _json({"ready": False, "error": state.error or "loading"}, 503)

    @app.get("/v2")
    async def server_metadata() -> Response:
        """OIP v2 server metadata."""
        return _json(
            {
                "name": "mlops-serving",
                "version": "1",
                "extensions": ["binary_tensor_data", "capture"],
            }
        )

    @app.get("/model-info")
    async def model_info(request: Request) -> Response:
        """The bundle's manifest: framework, signature, features, classes, lineage (the
        token, where one is set)."""
        if refused := h.refused(request):
            return refused
        manifest = state.manifest.model_dump(by_alias=True, exclude_none=True)
        return _json(
            {
                **manifest,
                "name": state.name,
                "version": state.version,
                "track": state.settings.track,
            }
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text exposition."""
        if not state.ready:
            return Response(b"", media_type="text/plain; version=0.0.4")
        body = state.metrics.exposition()
        if state.settings.capture_metrics and state.capturing:
            own = state.capture.capture.cumulative()  # on the loop, which alone records
            base = (state.name, state.version, state.settings.track)
            body += await run_in_threadpool(
                lambda: capture_exposition(base, state.capture.totals(own))
            )
        return Response(body, media_type="text/plain; version=0.0.4")

    @app.get("/v2/profile")
    async def profile(request: Request) -> Response:
        """The bundle's reference profile (profile.json), what captured traffic is
        compared with: DriftMonitor reads it here, so that it needs no access to the
        artifact. It describes the training data, so it needs the token when one is set."""
        if refused := h.refused(request):
            return refused
        assert state.bundle is not None  # noqa: S101 - ready means loaded
        return _json(state.bundle.profile.model_dump(exclude_none=True))

    @app.get("/v2/capture")
    async def capture(request: Request, since: float | None = None) -> Response:
        """Captured traffic binned on the reference profile: per window, counts per
        feature and for predictions, and a reservoir of raw rows (mlops_serving.capture).
        The rows are users' data: the token, where one is set."""
        if refused := h.refused(request):
            return refused
        view = state.capture.reader(since)

        def answer() -> Response:
            served = view().model_copy(
                update={
                    "model": state.name,
                    "version": state.version,
                    "track": state.settings.track,
                }
            )
            return Response(served.json_bytes(), media_type=JSON)

        return await run_in_threadpool(answer)


async def _flush_capture(state: State, every: float = 2.0) -> None:
    """Share this worker's changed capture windows with its sibling workers. They are
    read here, on the event loop that alone records; only the file writes run in a
    thread."""
    while True:
        await asyncio.sleep(every)
        if state.ready and state.capture.directory is not None:
            capture = state.capture.capture
            totals = capture.cumulative() if state.settings.capture_metrics else None
            await run_in_threadpool(state.capture.write, *capture.changes(), totals)
