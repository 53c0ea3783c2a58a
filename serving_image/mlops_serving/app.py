"""The serving API: Open Inference Protocol v2, /predict routes, health, metrics, capture.

This is the HTTP layer only: it bounds and reads bodies (JSON with orjson, or the
binary tensor extension), checks the bearer token, hands payloads to the data plane
(dataplane.py), and answers. One mapping turns exceptions into statuses:
RequestError -> its 4xx naming the field; ModelError -> 500 with the request id its
traceback was logged under, after which the server keeps serving.
"""

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from mlops_contract.settings import ServingSettings
from starlette.concurrency import run_in_threadpool

from . import binary
from .dataplane import (
    INFER,
    PREDICT,
    PREDICT_BATCH,
    DataPlane,
    Encoded,
    LoadedBundle,
    ModelError,
    Protocol,
    State,
    load_bundle,
)
from .metrics import capture_exposition
from .requests import RequestError

log = logging.getLogger("mlops_serving")
JSON = "application/json"


def _json(content: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), status, media_type=JSON
    )


def _error(status: int, message: str, **extra: Any) -> Response:
    return _json({"error": message, **extra}, status)


def _refusal(error: RequestError) -> Response:
    """A request refused: its status, and the field it is about."""
    return _error(error.status, error.message, field=error.field)


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


def _encoded(encoded: Encoded) -> Response:
    document, blob = encoded
    if not blob:
        return _json(document)
    head = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(
        head + blob,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(head))},
    )


class Handlers:
    """Request handling shared by the routes: body limits, auth, errors as statuses."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.plane = DataPlane(state)
        self.limit = state.settings.max_body_bytes
        settings = state.settings
        self.token = (
            settings.auth_token_file.read_text().strip().encode()
            if settings.auth_token_file
            else None
        )

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
        token = self.token
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
            return _refusal(error)
        return None

    def not_ready(self) -> Response | None:
        if self.state.ready:
            return None
        return _error(503, f"model not ready: {self.state.error or 'loading'}")

    def check_model(self, name: str, version: str | None) -> Response | None:
        if refused := self.not_ready():
            return refused
        try:
            self.plane.check_model(name, version)
        except RequestError as error:
            return _refusal(error)
        return None

    async def predict(self, protocol: Protocol, request: Request) -> Response:
        start = time.perf_counter()
        if refused := self.not_ready():
            return refused
        metrics = self.state.metrics
        metrics.in_flight.inc()
        code = 200
        try:
            self.authorize(request)
            return _encoded(await self.plane.infer(protocol, await self.read_json(request)))
        except RequestError as error:
            code = error.status
            return _refusal(error)
        except ModelError as error:
            code = 500
            return _error(500, "the model failed on this request", requestId=error.request_id)
        except Exception:
            # A request this server failed to check: a bug, counted as the 500 it is.
            request_id = uuid.uuid4().hex
            log.exception("error on a request (request %s)", request_id)
            code = 500
            return _error(500, "the server failed on this request", requestId=request_id)
        finally:
            metrics.in_flight.dec()
            metrics.observe(protocol.route, code, time.perf_counter() - start)


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
        return await h.predict(INFER, request)

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
        return await h.predict(PREDICT, request)

    @post("/predict-batch", PREDICT_BATCH_BODY)
    async def predict_batch(request: Request) -> Response:
        """Many rows: {"instances": [row, ...]} -> predictions and probabilities."""
        return await h.predict(PREDICT_BATCH, request)


def _info_routes(app: FastAPI, h: Handlers) -> None:
    state = h.state

    @app.get("/v2/models/{name}")
    async def model_metadata(request: Request, name: str) -> Response:
        """OIP v2 model metadata (the token, where one is set)."""
        return h.refused(request) or h.check_model(name, None) or _json(h.plane.metadata())

    @app.get("/v2/models/{name}/versions/{version}")
    async def model_version_metadata(request: Request, name: str, version: str) -> Response:
        """OIP v2 model metadata for a version (the token, where one is set)."""
        return h.refused(request) or h.check_model(name, version) or _json(h.plane.metadata())

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
