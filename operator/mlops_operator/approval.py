"""Approval of ModelVersions: an RBAC-checked act whose actor the API server names.

A user approves with `kubectl annotate mv NAME mlops.dev/approval=approved` (or
`rejected`). The operator's mutating admission webhook sees the request with the
user the API server authenticated, asks the API server (SubjectAccessReview)
whether that user may `approve` modelversions.mlops.dev, refuses the request if
not, and otherwise stamps who and when into annotations, signed with a key only
this operator process holds. Requests that touch those stamps without approving
get them put back, so nobody can type their way to an approval.
"""

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlops_operator.conditions import now
from mlops_operator.constants import GROUP

ANNOTATION = f"{GROUP}/approval"
APPROVED_BY = f"{GROUP}/approved-by"
APPROVED_AT = f"{GROUP}/approved-at"
APPROVED_DIGEST = f"{GROUP}/approved-digest"
SIGNATURE = f"{GROUP}/approval-signature"
STAMPS = (APPROVED_BY, APPROVED_AT, APPROVED_DIGEST, SIGNATURE)
STATES = {"approved": "Approved", "rejected": "Rejected"}
VERB = "approve"

_KEY = secrets.token_bytes(32)


class DeniedError(Exception):
    """The request may not change the approval; the message says why."""


@dataclass(frozen=True)
class Recorded:
    state: str
    by: str
    at: str
    digest: str
    """spec.artifact.digest when the approval was given: what was approved."""


def _sign(*fields: str) -> str:
    """The signature over namespace, name, value, approver, time and digest."""
    message = "\0".join(fields).encode()
    return hmac.new(_KEY, message, hashlib.sha256).hexdigest()


def _digest(mv: dict[str, Any] | None) -> str:
    return str((((mv or {}).get("spec") or {}).get("artifact") or {}).get("digest") or "")


def _annotations(obj: dict[str, Any] | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("annotations") or {})


def read(mv: dict[str, Any]) -> Recorded | None:
    """The approval stamped by this process's webhook for the artifact the ModelVersion
    names now, or None if absent, forged, or given to other bytes."""
    notes = _annotations(mv)
    value, by, at, digest, signature = (notes.get(k) for k in (ANNOTATION, *STAMPS))
    if value not in STATES or not by or not at or digest is None or not signature:
        return None
    meta = mv["metadata"]
    expected = _sign(meta["namespace"], meta["name"], value, by, at, digest)
    if not hmac.compare_digest(expected, signature) or digest != _digest(mv):
        return None
    return Recorded(STATES[value], by, at, digest)


def admit(
    body: dict[str, Any],
    old: dict[str, Any] | None,
    namespace: str,
    user: str,
    allowed: Callable[[], bool],
) -> dict[str, str | None]:
    """Annotations to set (None removes) on a ModelVersion CREATE or UPDATE.

    `allowed()` asks the API server whether `user` may approve; it is called only
    when the request changes the approval annotation.
    """
    new_notes, old_notes = _annotations(body), _annotations(old)
    value = new_notes.get(ANNOTATION)
    if value == old_notes.get(ANNOTATION):
        return {k: old_notes.get(k) for k in STAMPS if new_notes.get(k) != old_notes.get(k)}
    if value is None:
        return dict.fromkeys(STAMPS)
    if value not in STATES:
        raise DeniedError(
            f"metadata.annotations[{ANNOTATION}]: must be one of {', '.join(STATES)}, not {value!r}"
        )
    if not allowed():
        raise DeniedError(
            f"user {user!r} may not {VERB} ModelVersions: that needs the verb {VERB!r} on "
            f"modelversions.{GROUP} (a Role or ClusterRole rule)"
        )
    meta = body["metadata"]
    at, digest = now(), _digest(body)
    return {
        APPROVED_BY: user,
        APPROVED_AT: at,
        APPROVED_DIGEST: digest,
        SIGNATURE: _sign(namespace, meta["name"], value, user, at, digest),
    }
