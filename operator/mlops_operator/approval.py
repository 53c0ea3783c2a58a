"""Approval of ModelVersions: an act the API server checks, names and binds to bytes.

An approver sets three annotations in one request (`kubectl mlops approve mv/NAME`
does it for them):

    mlops.dev/approval: approved | rejected
    mlops.dev/approved-by: their own user name
    mlops.dev/approved-digest: spec.artifact.digest

The ValidatingAdmissionPolicy below (shipped in crds/ and the chart) admits a
request that changes any of them only when its user may `approve` that
ModelVersion, names themself, and names the digest the ModelVersion pins.
Revoking (removing them) needs the same verb. The API server enforces it, so
nothing holds a key, nothing can be forged through a webhook, and approvals work
while the operator is down. The operator copies what was admitted into status,
and trusts the annotations only while the policy and its binding are in force.
"""

from dataclasses import dataclass
from typing import Any

from mlops_operator.constants import GROUP

ANNOTATION = f"{GROUP}/approval"
APPROVED_BY = f"{GROUP}/approved-by"
APPROVED_DIGEST = f"{GROUP}/approved-digest"
KEYS = (ANNOTATION, APPROVED_BY, APPROVED_DIGEST)
STATES = {"approved": "Approved", "rejected": "Rejected"}
VERB = "approve"
POLICY = f"modelversion-approval.{GROUP}"
POLICY_FILE = "modelversion-approval.yaml"


@dataclass(frozen=True)
class Recorded:
    state: str
    by: str
    digest: str
    """spec.artifact.digest when the approval was given: what was approved."""
    at: str | None
    """When the API server admitted the approval (from managedFields), if known."""


def _annotations(obj: dict[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def read(mv: dict[str, Any]) -> Recorded | None:
    """The approval the ModelVersion carries for the artifact it pins now, or None.

    Under the policy an approval is complete and names the pinned digest; one that
    is not (written before the policy was installed) counts as none.
    """
    notes = _annotations(mv)
    value, by, digest = (notes.get(k) for k in KEYS)
    pinned = mv["spec"]["artifact"]["digest"]
    if value not in STATES or not by or not digest or digest != pinned:
        return None
    return Recorded(STATES[value], by, digest, _admitted_at(mv))


def _admitted_at(mv: dict[str, Any]) -> str | None:
    """The time of the write that last set the approval annotation, as the API
    server stamped it in managedFields."""
    times = [
        entry["time"]
        for entry in mv["metadata"].get("managedFields") or []
        if entry.get("time")
        and f"f:{ANNOTATION}"
        in (((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:annotations") or {})
    ]
    return max(times, default=None)


def _cel_get(key: str) -> str:
    return f"('{key}' in variables.notes ? variables.notes['{key}'] : '')"


def policy() -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicy that makes approval an authorized act, and its
    binding to every namespace."""
    guard = "!variables.changed || "
    approving = f"!('{ANNOTATION}' in variables.notes) || "
    validations = [
        {
            "expression": guard + f"authorizer.group('{GROUP}').resource('modelversions')"
            ".namespace(object.metadata.namespace).name(object.metadata.name)"
            f".check('{VERB}').allowed()",
            "messageExpression": "'user ' + request.userInfo.username + ' may not approve, "
            f"reject or revoke ModelVersions: that needs the verb {VERB} on "
            f"modelversions.{GROUP} (bind the ClusterRole mlops-approver)'",
            "reason": "Forbidden",
        },
        {
            "expression": guard + approving + f"variables.notes['{ANNOTATION}'] in "
            f"{sorted(STATES)}",
            "message": f"metadata.annotations[{ANNOTATION}] must be one of "
            f"{', '.join(sorted(STATES))}",
        },
        {
            "expression": guard + approving + f"{_cel_get(APPROVED_BY)} == "
            "request.userInfo.username",
            "messageExpression": f"'metadata.annotations[{APPROVED_BY}] must be your own "
            "user name, ' + request.userInfo.username + ' (kubectl mlops approve fills it in)'",
        },
        {
            "expression": guard + approving + f"{_cel_get(APPROVED_DIGEST)} == "
            "object.spec.artifact.digest",
            "messageExpression": f"'metadata.annotations[{APPROVED_DIGEST}] must be "
            "spec.artifact.digest, ' + object.spec.artifact.digest + ', the bytes approved'",
        },
        {
            "expression": guard + f"'{ANNOTATION}' in variables.notes || "
            f"(!('{APPROVED_BY}' in variables.notes) && "
            f"!('{APPROVED_DIGEST}' in variables.notes))",
            "message": f"metadata.annotations: {APPROVED_BY} and {APPROVED_DIGEST} go "
            f"together with {ANNOTATION}",
        },
    ]
    keys = ", ".join(f"'{k}'" for k in KEYS)
    spec = {
        "failurePolicy": "Fail",
        "matchConstraints": {
            "resourceRules": [
                {
                    "apiGroups": [GROUP],
                    "apiVersions": ["*"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": ["modelversions"],
                }
            ]
        },
        "variables": [
            {
                "name": "notes",
                "expression": "has(object.metadata.annotations) ? object.metadata.annotations : {}",
            },
            {
                "name": "old",
                "expression": "oldObject != null && has(oldObject.metadata.annotations) ? "
                "oldObject.metadata.annotations : {}",
            },
            {
                "name": "changed",
                "expression": f"[{keys}].exists(k, "
                "(k in variables.notes ? variables.notes[k] : '') != "
                "(k in variables.old ? variables.old[k] : ''))",
            },
        ],
        "validations": validations,
    }
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": POLICY},
            "spec": spec,
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": POLICY},
            "spec": {"policyName": POLICY, "validationActions": ["Deny"]},
        },
    ]


def in_force(policy_object: dict[str, Any] | None, binding: dict[str, Any] | None) -> bool:
    """Whether the API server enforces approvals: the policy exists, fails closed, and
    is bound to every namespace with the action Deny."""
    if policy_object is None or binding is None:
        return False
    spec, bound = policy_object.get("spec") or {}, binding.get("spec") or {}
    return (
        spec.get("failurePolicy", "Fail") == "Fail"
        and bound.get("policyName") == POLICY
        and "Deny" in (bound.get("validationActions") or [])
        and not bound.get("matchResources")
    )
