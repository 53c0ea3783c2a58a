"""The data plane: a request's payload parsed, run through the model and encoded, with
the prediction metrics and capture that go with it. No HTTP here, as in MLServer:
the routes in app.py read bodies, check tokens and map errors to statuses, and hand
payloads (plain JSON, or split from the binary tensor extension) to a `Protocol`.

A protocol is the three things that differ between the inference APIs: how rows are
parsed from a payload (requests.Features), how outputs are encoded, and the name
metrics give it. Anything that can build a payload can call `DataPlane.infer`.
"""

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from mlops_contract.profile import Profile
from mlops_contract.settings import ServingSettings

from . import binary
from .artifacts import materialize
from .bundle import Manifest, open_bundle
from .capture import Capture, SharedCapture
from .loaders import Model, Outputs, load_model
from .metrics import Metrics
from .requests import Features, RequestError, infer_outputs
from .runner import Runner, time_call

log = logging.getLogger("mlops_serving")


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
    """The model served and what goes with it (runner, metrics, capture); `ready` only
    once the model is loaded and warmed up."""

    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self.ready = False
        self.error: str | None = None
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


class ModelError(Exception):
    """The model raised on a request. Its traceback is logged under `request_id`; the
    caller is told only the id."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"the model failed on this request (request {request_id})")
        self.request_id = request_id


Encoded = tuple[dict[str, Any], bytes]
"""A response document (JSON-ready, but for numpy arrays, which orjson writes), and the
binary tensor data that follows it (the binary tensor extension of the Open Inference
Protocol); b"" when there is none."""


@dataclass(frozen=True)
class Protocol:
    """One inference API: how it parses rows and encodes outputs."""

    route: str
    """The route label of the request metrics."""
    parse: Callable[[Features, Any], npt.NDArray[Any]]
    encode: Callable[[State, Outputs, Any], Encoded]


def _probabilities(outputs: Outputs) -> Any:
    proba = outputs.tensors.get("predict_proba")
    return proba.tolist() if proba is not None else None


def _encode_one(state: State, outputs: Outputs, _: Any) -> Encoded:
    proba = _probabilities(outputs)
    document = {
        "prediction": outputs.primary[0],
        "probabilities": proba[0] if proba else None,
        "classes": state.classes or None,
    }
    return document, b""


def _encode_batch(state: State, outputs: Outputs, _: Any) -> Encoded:
    document = {
        "predictions": outputs.primary,
        "probabilities": _probabilities(outputs),
        "classes": state.classes or None,
    }
    return document, b""


def _encode_infer(state: State, outputs: Outputs, payload: Any) -> Encoded:
    tensors = infer_outputs(outputs.tensors, payload.get("outputs"))
    everything, named = binary.wants_binary(payload)
    blob = b""
    if everything or named:
        tensors, blob = binary.encode(tensors, outputs.tensors, everything, named)
    document: dict[str, Any] = {
        "model_name": state.name,
        "model_version": state.version,
        "outputs": tensors,
    }
    if isinstance(payload.get("id"), str):
        document["id"] = payload["id"]
    if isinstance(payload.get("parameters"), dict):
        document["parameters"] = payload["parameters"]
    return document, blob


INFER = Protocol("infer", Features.from_infer, _encode_infer)
"""Open Inference Protocol v2: named input tensors in, named output tensors out."""
PREDICT = Protocol("predict", Features.from_predict, _encode_one)
"""One row: {"features": [v, ...] | {name: v}} -> prediction and probabilities."""
PREDICT_BATCH = Protocol("predict-batch", Features.from_predict_batch, _encode_batch)
"""Many rows: {"instances": [row, ...]} -> predictions and probabilities."""


class DataPlane:
    """Inference on the model a `State` serves, once it is ready."""

    def __init__(self, state: State) -> None:
        self.state = state

    def check_model(self, name: str, version: str | None) -> None:
        """RequestError (404) unless this server serves `name` (at `version`, if given)."""
        state = self.state
        if name != state.name:
            raise RequestError(
                404, "name", f"model {name!r} is not served here; this server serves {state.name!r}"
            )
        if version is not None and version != state.version:
            raise RequestError(
                404, "version", f"version {version!r} of {name!r} is not served here"
            )

    async def infer(self, protocol: Protocol, payload: Any) -> Encoded:
        """Parse, predict, count and capture, encode. RequestError names what is wrong
        with the payload; ModelError stands for whatever the model raised."""
        state = self.state
        rows = protocol.parse(state.features, payload)
        try:
            outputs = await state.runner(rows)
        except Exception as error:
            request_id = uuid.uuid4().hex
            log.exception("model error (request %s)", request_id)
            raise ModelError(request_id) from error
        state.metrics.batch_rows.observe(len(rows))
        state.metrics.predictions(outputs.class_index, outputs.primary)
        if state.capturing and state.capture.capture.sampled():
            state.capture.capture.record(rows, outputs.primary)
            state.metrics.captured_rows.inc(len(rows))
        return protocol.encode(state, outputs, payload)

    def metadata(self) -> dict[str, Any]:
        """OIP v2 model metadata."""
        state = self.state
        signature = state.manifest.signature
        return {
            "name": state.name,
            "versions": [state.version],
            "platform": state.manifest.framework,
            "inputs": [t.model_dump() for t in signature.inputs],
            "outputs": [t.model_dump() for t in signature.outputs],
        }
