"""kopf entry module: the handlers, each a few lines that delegate.

Read it as a table of contents: what the operator reacts to, and where the
work for each resource lives (modelversion.py, modeldeployment.py, approval.py).
"""

import logging
import tempfile
from pathlib import Path
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from mlops_operator import approval, kube, modeldeployment, modelversion, webhook
from mlops_operator.conditions import Reporter
from mlops_operator.constants import (
    FINALIZER,
    GROUP,
    LABEL_DEPLOYMENT,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    VERSION,
)
from mlops_operator.metrics import reconciling
from mlops_operator.settings import OperatorSettings

SETTINGS = OperatorSettings()
MV = (GROUP, VERSION, "modelversions")
MDEP = (GROUP, VERSION, "modeldeployments")
CHILDREN = {LABEL_MANAGED_BY: MANAGED_BY}
Body = Any
Log = logging.Logger | logging.LoggerAdapter[Any]


def reporter(body: Body, logger: Log) -> Reporter:
    """Events on the object: kopf.info/kopf.warn queue them for its background poster."""

    def post(kind: str, reason: str, message: str) -> None:
        (kopf.warn if kind == "Warning" else kopf.info)(body, reason=reason, message=message)

    return Reporter(logger, post)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: Log, **_: Any) -> None:
    """kopf's bookkeeping under our own prefix; watch, event and webhook tuning."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.getLevelName(SETTINGS.event_level)
    settings.watching.server_timeout = SETTINGS.watch_server_timeout
    settings.watching.client_timeout = SETTINGS.watch_client_timeout
    settings.networking.request_timeout = SETTINGS.request_timeout
    settings.execution.max_workers = 16
    if SETTINGS.webhook_host:
        directory = Path(SETTINGS.webhook_cert_dir or tempfile.mkdtemp(prefix="mlops-webhook-"))
        cert, key = directory / "webhook.crt", directory / "webhook.key"
        if not cert.exists():
            cert, key = webhook.self_signed(SETTINGS.webhook_host, directory)
        settings.admission.server = kopf.WebhookServer(
            addr=SETTINGS.webhook_listen,
            port=SETTINGS.webhook_port,
            host=SETTINGS.webhook_host,
            certfile=str(cert),
            pkeyfile=str(key),
        )
        settings.admission.managed = GROUP
    if SETTINGS.metrics_port:
        from prometheus_client import start_http_server  # noqa: PLC0415

        start_http_server(SETTINGS.metrics_port)
    logger.info("mlops-operator configured: image %s", SETTINGS.serving_image)


@kopf.timer(*MV, interval=SETTINGS.resync_seconds, initial_delay=SETTINGS.resync_seconds)
def model_version_resync(body: Body, logger: Log, **_: Any) -> None:
    """Refresh status (deployedBy, failed verifications) as a safety net."""
    with reconciling("ModelVersion"):
        modelversion.reconcile(dict(body), SETTINGS, reporter(body, logger))


@kopf.on.resume(*MV)
@kopf.on.create(*MV)
@kopf.on.update(*MV)
def model_version(body: Body, logger: Log, **_: Any) -> None:
    """Verify, record approval and aliases; then roll the deployments of this model."""
    with reconciling("ModelVersion"):
        modelversion.reconcile(dict(body), SETTINGS, reporter(body, logger))
    namespace = body["metadata"]["namespace"]
    for mdep in modeldeployment.following(dict(body), kube.list_model_deployments(namespace)):
        with reconciling("ModelDeployment"):
            modeldeployment.reconcile(mdep, SETTINGS, reporter(mdep, logger))


@kopf.on.mutate(*MV, operations=["CREATE", "UPDATE"], id="approval")
def approve(
    body: Body, namespace: str | None, userinfo: Any, patch: kopf.Patch, **kwargs: Any
) -> None:
    """Only users with the `approve` verb may approve; the API server names them."""
    user = str(userinfo.get("username", ""))
    name = body["metadata"].get("name", "")
    namespace = namespace or ""

    def allowed() -> bool:
        return kube.may(
            user=user,
            groups=list(userinfo.get("groups") or []),
            uid=userinfo.get("uid"),
            extra=userinfo.get("extra"),
            verb=approval.VERB,
            plural="modelversions",
            namespace=namespace,
            name=name,
        )

    old = kwargs.get("old")
    try:
        changes = approval.admit(dict(body), dict(old) if old else None, namespace, user, allowed)
    except approval.DeniedError as denied:
        raise kopf.AdmissionError(str(denied), code=403) from None
    for key, value in changes.items():
        patch.metadata.annotations[key] = value


@kopf.on.resume(*MDEP)
@kopf.on.create(*MDEP)
@kopf.on.update(*MDEP)
@kopf.timer(*MDEP, interval=SETTINGS.resync_seconds, initial_delay=SETTINGS.resync_seconds)
def model_deployment(body: Body, logger: Log, **_: Any) -> None:
    """Converge the children and the status (also periodically, as a safety net)."""
    with reconciling("ModelDeployment"):
        modeldeployment.reconcile(dict(body), SETTINGS, reporter(body, logger))


@kopf.on.event("apps", "v1", "deployments", labels=CHILDREN)
@kopf.on.event("", "v1", "services", labels=CHILDREN)
@kopf.on.event("autoscaling", "v2", "horizontalpodautoscalers", labels=CHILDREN)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=CHILDREN)
def child_changed(body: Body, logger: Log, **_: Any) -> None:
    """A child changed (status, a hand edit, a deletion): converge its owner."""
    meta = body["metadata"]
    owner = (meta.get("labels") or {}).get(LABEL_DEPLOYMENT)
    if not owner:
        return
    try:
        mdep = kube.read_custom(modeldeployment.PLURAL, meta["namespace"], owner)
    except ApiException as error:
        raise kopf.TemporaryError(
            f"cannot read ModelDeployment {owner}: {error.reason}", delay=5
        ) from error
    if mdep is not None and not mdep["metadata"].get("deletionTimestamp"):
        with reconciling("ModelDeployment"):
            modeldeployment.reconcile(mdep, SETTINGS, reporter(mdep, logger))
