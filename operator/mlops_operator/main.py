"""kopf entry module: the handlers, each a few lines that delegate.

Read it as a table of contents: what the operator reacts to, and where the
work for each resource lives (modelversion.py, modeldeployment.py, driftmonitor.py).
Approval needs no handler: the API server enforces it (approval.py).
"""

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from mlops_operator import (
    analysis,
    caches,
    driftmonitor,
    health,
    kube,
    modeldeployment,
    modelversion,
    retry,
    timers,
)
from mlops_operator.builders import ROUTER
from mlops_operator.conditions import Reporter
from mlops_operator.constants import (
    GROUP,
    LABEL_DEPLOYMENT,
    LABEL_MANAGED_BY,
    LABEL_TRACK,
    LABEL_VERIFIED_BY_POD,
    MANAGED_BY,
    VERSION,
)
from mlops_operator.metrics import CANARY, DRIFT, reconciling
from mlops_operator.settings import OperatorSettings

SETTINGS = OperatorSettings()
CHANGES = caches.ChangeFilter()
MV = (GROUP, VERSION, "modelversions")
MDEP = (GROUP, VERSION, "modeldeployments")
DM = (GROUP, VERSION, driftmonitor.PLURAL)
CHILDREN = {LABEL_MANAGED_BY: MANAGED_BY}
Body = Any
Log = logging.Logger | logging.LoggerAdapter[Any]
LOOP: asyncio.AbstractEventLoop


def _reconcile_latest(key: retry.Key, logger: Log) -> None:
    """Reconcile the object as it is now, if it still exists."""
    plural, namespace, name = key
    obj = kube.read_custom(plural, namespace, name)
    if obj is None or obj["metadata"].get("deletionTimestamp"):
        return
    if plural == "modelversions":
        _model_version("MODIFIED", obj, modelversion.change_key(obj), logger)
    elif plural == modeldeployment.PLURAL:
        _model_deployment(obj, logger)
        CHANGES.handled(obj, modeldeployment.change_key(obj))
    else:
        raise ValueError(f"no reconcile for {plural}")


RETRIES = retry.Retries(_reconcile_latest)
LOG = logging.getLogger("mlops_operator")


def _run_monitor(key: retry.Key) -> float | None:
    """Run one DriftMonitor if it is due; the seconds until its next run."""
    plural, namespace, name = key
    dm = kube.read_custom(plural, namespace, name)
    if dm is None or dm["metadata"].get("deletionTimestamp"):
        return None
    wait = driftmonitor.due_in(dm, time.time())
    if wait != 0:
        return wait
    with caches.LOCKS.of(namespace, f"{plural}/{name}"), reconciling("DriftMonitor"):
        driftmonitor.Monitor(dm, SETTINGS, reporter(dm, LOG), _post_webhook).run(time.time())
    return driftmonitor.interval_of(dm["spec"])


def _post_webhook(url: str, body: bytes, headers: dict[str, str]) -> None:
    driftmonitor.post_with_retries(url, body, headers, LOG.warning)


TIMERS = timers.Timers(_run_monitor, LOG)


def _run_rollout(key: retry.Key) -> float | None:
    """Look at a ModelDeployment's rollout again: a pause ended, a measurement is due,
    or its canary or router changed readiness."""
    plural, namespace, name = key
    obj = kube.read_custom(plural, namespace, name)
    if obj is None or obj["metadata"].get("deletionTimestamp"):
        return None
    with reconciling("ModelDeployment"):
        return modeldeployment.reconcile(obj, SETTINGS, reporter(obj, LOG))


ROLLOUTS = timers.Timers(_run_rollout, LOG)
HEARTBEAT = health.Heartbeat()


def reporter(body: Body, logger: Log) -> Reporter:
    """Events on the object, posted through the API (from any thread)."""

    def post(kind: str, reason: str, message: str) -> None:
        try:
            kube.post_event(dict(body), kind, reason, message)
        except ApiException as error:
            logger.warning("event %s not posted: %s", reason, error.reason)

    return Reporter(logger, post)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: Log, **_: Any) -> None:
    """Watch and request tuning. Only event handlers exist, so kopf keeps no finalizer,
    progress or diff-base on objects, and their loggers post no Events: the operator
    posts its own (Reporter)."""
    settings.watching.server_timeout = SETTINGS.watch_server_timeout
    settings.watching.client_timeout = SETTINGS.watch_client_timeout
    settings.networking.request_timeout = SETTINGS.request_timeout
    logger.info("mlops-operator configured: image %s", SETTINGS.serving_image)


@kopf.on.event(*MV)
async def model_version(type: str | None, body: Body, logger: Log, **_: Any) -> None:
    """Verify, record approval and aliases; then converge the deployments of this model."""
    caches.VERSIONS.update(dict(body), deleted=type == "DELETED")
    key = modelversion.change_key(body)
    if type != "DELETED" and CHANGES.seen(body, key):
        return  # an echo of our own status write
    meta = body["metadata"]
    await RETRIES.run(
        ("modelversions", meta["namespace"], meta["name"]),
        lambda: _model_version(type, dict(body), key, logger),
        logger,
    )


def _model_version(type: str | None, body: Body, key: Any, logger: Log) -> None:
    meta = body["metadata"]
    if type != "DELETED":
        lock = caches.LOCKS.of(meta["namespace"], f"modelversions/{meta['name']}")
        with lock, reconciling("ModelVersion"):
            modelversion.reconcile(dict(body), SETTINGS, reporter(body, logger))
        CHANGES.handled(body, key)
    else:
        caches.LOCKS.forget(meta["namespace"], f"modelversions/{meta['name']}")
        modelversion.FETCHES.forget(meta["namespace"], meta["name"])
        CHANGES.forget(body)
    namespace = meta["namespace"]
    for mdep in modeldeployment.following(
        dict(body), kube.list_custom(modeldeployment.PLURAL, namespace)
    ):
        _model_deployment(mdep, logger)


@kopf.on.event(*MDEP)
async def model_deployment(type: str | None, body: Body, logger: Log, **_: Any) -> None:
    """Converge children and status when the spec is new or changed."""
    meta = body["metadata"]
    caches.DEPLOYMENTS.update(dict(body), deleted=type == "DELETED")
    if type == "DELETED":
        modeldeployment.LEDGER.forget(meta["namespace"], meta["name"])
        caches.LOCKS.forget(meta["namespace"], meta["name"])
        analysis.BASELINES.forget(meta["namespace"], meta["name"])
        CANARY.forget(meta["namespace"], meta["name"])
        CHANGES.forget(body)
        ROLLOUTS.plan((modeldeployment.PLURAL, meta["namespace"], meta["name"]), None)
        return
    key = modeldeployment.change_key(body)
    if CHANGES.seen(body, key):
        return  # an echo of our own status write

    def work() -> None:
        _model_deployment(dict(body), logger)
        CHANGES.handled(body, key)

    await RETRIES.run((modeldeployment.PLURAL, meta["namespace"], meta["name"]), work, logger)


def _model_deployment(body: Body, logger: Log) -> None:
    """Reconcile, and plan the rollout's next look (from any thread)."""
    with reconciling("ModelDeployment"):
        requeue = modeldeployment.reconcile(body, SETTINGS, reporter(body, logger))
    meta = body["metadata"]
    key = (modeldeployment.PLURAL, meta["namespace"], meta["name"])
    LOOP.call_soon_threadsafe(ROLLOUTS.plan, key, requeue)


@kopf.on.event(*DM)
async def drift_monitor(type: str | None, body: Body, **_: Any) -> None:
    """Plan the monitor's next run from its status: now, after its interval, or not
    while suspended. The runs themselves are the timer loop's (start_background)."""
    meta = body["metadata"]
    key = (driftmonitor.PLURAL, meta["namespace"], meta["name"])
    if type == "DELETED":
        TIMERS.plan(key, None)
        DRIFT.forget(meta["namespace"], meta["name"])
        caches.LOCKS.forget(meta["namespace"], f"{driftmonitor.PLURAL}/{meta['name']}")
        return
    TIMERS.plan(key, driftmonitor.due_in(dict(body), time.time()))


@kopf.on.event("apps", "v1", "deployments", labels=CHILDREN)
@kopf.on.event("", "v1", "services", labels=CHILDREN)
@kopf.on.event("", "v1", "configmaps", labels=CHILDREN)
@kopf.on.event("autoscaling", "v2", "horizontalpodautoscalers", labels=CHILDREN)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=CHILDREN)
async def child_changed(type: str | None, body: Body, logger: Log, **_: Any) -> None:
    """A child changed: repair it if someone else did; mirror a Deployment's status.
    While a canary is set, a track's or the router's readiness moves the rollout (the
    canary becomes Ready, the stable track takes over after a promotion), so the
    rollout takes a look."""
    meta = body["metadata"]
    owner = (meta.get("labels") or {}).get(LABEL_DEPLOYMENT)
    if not owner:
        return
    key = (modeldeployment.PLURAL, meta["namespace"], owner)
    if body["kind"] == "Deployment":
        caches.CHILD_DEPLOYMENTS.update(dict(body), deleted=type == "DELETED")
    if type != "DELETED" and not kube.changed_by_others(dict(body)):
        track = (meta.get("labels") or {}).get(LABEL_TRACK)
        owner_body = caches.DEPLOYMENTS.get(meta["namespace"], owner) or {}
        if body["kind"] == "Deployment" and (owner_body.get("spec") or {}).get("canary"):
            ROLLOUTS.plan(key, 0)
        if body["kind"] == "Deployment" and track and track != ROUTER:
            modeldeployment.STATUS.submit(meta["namespace"], owner, track, dict(body))
        return
    await RETRIES.run(key, lambda: _reconcile_latest(key, logger), logger)


@kopf.on.event("", "v1", "pods", labels={**CHILDREN, LABEL_VERIFIED_BY_POD: "true"})
async def pod_verified(type: str | None, body: Body, logger: Log, **_: Any) -> None:
    """A serving pod's verify step ended: its verdict goes into the ModelVersion's status."""
    verdict = None if type == "DELETED" else modelversion.pod_verdict(dict(body))
    if verdict is not None:
        namespace = body["metadata"]["namespace"]
        await asyncio.to_thread(_record_verdict, namespace, verdict, logger)


def _record_verdict(namespace: str, verdict: modelversion.PodVerdict, logger: Log) -> None:
    name = verdict.model_version
    mv = caches.VERSIONS.named(namespace, name) or kube.read_custom(
        "modelversions", namespace, name
    )
    if mv is not None:
        with caches.LOCKS.of(namespace, f"modelversions/{name}"), reconciling("ModelVersion"):
            modelversion.record_pod_verdict(mv, verdict, SETTINGS, reporter(mv, logger))


@kopf.on.startup()
async def start_background(memo: kopf.Memo, logger: Log, **_: Any) -> None:
    """The periodic resync (the safety net for missed events), the status writer, and
    the DriftMonitors' timers.

    Handlers are async: events that need no API call (echoes, child status) are
    handled on the event loop, and the blocking work goes to one bounded pool.
    """
    global LOOP  # noqa: PLW0603 - the one loop, known once it runs
    loop = LOOP = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(kube.WORKERS, thread_name_prefix="mlops"))

    def fetched(key: modelversion.Key) -> None:
        """A ModelVersion's artifact fetch ended: reconcile it, to record the result."""
        retry_key = (modelversion.PLURAL, *key)
        work = RETRIES.run(retry_key, lambda: _reconcile_latest(retry_key, logger), logger)
        asyncio.run_coroutine_threadsafe(work, loop)

    modelversion.FETCHES.finished = fetched
    memo["tasks"] = [
        loop.create_task(_resync(logger)),
        loop.create_task(
            modeldeployment.write_statuses(SETTINGS, lambda body: reporter(body, logger), logger)
        ),
        loop.create_task(TIMERS.loop()),
        loop.create_task(ROLLOUTS.loop()),
        loop.create_task(HEARTBEAT.loop()),
    ]


@kopf.on.probe(id="reconcileWorkers")
async def reconcile_workers(**_: Any) -> float:
    """Seconds since a reconcile worker was last free; /healthz fails past
    stuck_seconds, and Kubernetes restarts the operator."""
    silent = HEARTBEAT.silent_for()
    if silent > SETTINGS.stuck_seconds:
        raise kopf.PermanentError(f"no reconcile worker has been free for {silent:.0f} s")
    return round(silent, 1)


@kopf.on.cleanup()
async def stop_background(memo: kopf.Memo, **_: Any) -> None:
    for task in memo["tasks"]:
        task.cancel()
    RETRIES.cancel()


async def _resync(logger: Log) -> None:
    while True:
        await asyncio.sleep(SETTINGS.resync_seconds)
        try:
            await asyncio.to_thread(_resync_once, logger)
        except Exception:
            logger.exception("resync failed; retrying in %s s", SETTINGS.resync_seconds)


def _resync_once(logger: Log) -> None:
    for namespace in SETTINGS.list_scopes():
        for plural, kind in (
            (modelversion.PLURAL, "ModelVersion"),
            (modeldeployment.PLURAL, "ModelDeployment"),
        ):
            for obj in kube.list_custom(plural, namespace):
                meta = obj["metadata"]
                if not SETTINGS.watches(meta["namespace"]):
                    continue
                try:
                    if plural == modelversion.PLURAL:
                        lock = caches.LOCKS.of(meta["namespace"], f"{plural}/{meta['name']}")
                        with lock, reconciling(kind):
                            modelversion.reconcile(obj, SETTINGS, reporter(obj, logger))
                    else:
                        _model_deployment(obj, logger)  # it takes the object's lock
                except Exception:
                    logger.exception(
                        "resync of %s %s/%s failed", kind, meta["namespace"], meta["name"]
                    )
