"""What the operator reads as an approval, when it trusts the API server to have
checked it, and what `kubectl mlops` writes. The policy itself is exercised on the
API server (tests/integration/test_operator.py)."""

from typing import Any

import pytest

from mlops_operator import approval
from mlops_operator.kubectl_plugin import (
    DEPLOYMENT_KINDS,
    PluginError,
    annotations,
    object_name,
    parse,
)

PINNED = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


def model_version(notes: dict[str, str], fields: list[dict[str, Any]] | None = None) -> Any:
    return {
        "metadata": {"name": "iris-1", "annotations": notes, "managedFields": fields or []},
        "spec": {"artifact": {"digest": PINNED}},
    }


def written(at: str, *keys: str) -> dict[str, Any]:
    """A managedFields entry of a write at `at` that set `keys` as annotations."""
    owned: dict[str, Any] = {f"f:{k}": {} for k in keys}
    return {
        "manager": "kubectl-annotate",
        "time": at,
        "fieldsV1": {"f:metadata": {"f:annotations": owned}},
    }


APPROVED = {
    approval.ANNOTATION: "approved",
    approval.APPROVED_BY: "bob",
    approval.APPROVED_DIGEST: PINNED,
}


@pytest.mark.parametrize(
    ("notes", "expected"),
    [
        (APPROVED, ("Approved", "bob", PINNED)),
        ({**APPROVED, approval.ANNOTATION: "rejected"}, ("Rejected", "bob", PINNED)),
        ({**APPROVED, approval.APPROVED_DIGEST: OTHER}, None),  # other bytes
        ({k: v for k, v in APPROVED.items() if k != approval.APPROVED_DIGEST}, None),
        ({k: v for k, v in APPROVED.items() if k != approval.APPROVED_BY}, None),
        ({**APPROVED, approval.ANNOTATION: "yes"}, None),
        ({}, None),
    ],
)
def test_read(notes: dict[str, str], expected: tuple[str, str, str] | None) -> None:
    recorded = approval.read(model_version(notes))
    assert (recorded and (recorded.state, recorded.by, recorded.digest)) == expected


def test_read_takes_the_time_of_the_write_that_set_the_approval() -> None:
    fields = [
        written("2026-01-01T00:00:00Z", "team"),
        written("2026-01-02T00:00:00Z", *approval.KEYS),
        written("2026-01-03T00:00:00Z", "note"),
    ]
    recorded = approval.read(model_version(APPROVED, fields))
    assert recorded is not None
    assert recorded.at == "2026-01-02T00:00:00Z"
    assert approval.read(model_version(APPROVED)).at is None


POLICY, BINDING = approval.policy()


@pytest.mark.parametrize(
    ("policy", "binding", "enforced"),
    [
        (POLICY, BINDING, True),
        (None, BINDING, False),
        (POLICY, None, False),
        ({**POLICY, "spec": {**POLICY["spec"], "failurePolicy": "Ignore"}}, BINDING, False),
        (POLICY, {**BINDING, "spec": {**BINDING["spec"], "validationActions": ["Warn"]}}, False),
        (POLICY, {**BINDING, "spec": {**BINDING["spec"], "validationActions": ["Audit"]}}, False),
        (POLICY, {**BINDING, "spec": {**BINDING["spec"], "policyName": "other"}}, False),
        (
            POLICY,
            {**BINDING, "spec": {**BINDING["spec"], "matchResources": {"namespaceSelector": {}}}},
            False,
        ),
    ],
)
def test_in_force(policy: Any, binding: Any, enforced: bool) -> None:
    assert approval.in_force(policy, binding) is enforced


@pytest.mark.parametrize(
    ("ref", "name"),
    [
        ("mv/iris-1", "iris-1"),
        ("modelversion/iris-1", "iris-1"),
        ("modelversions.mlops.dev/iris-1", "iris-1"),
        ("iris-1", "iris-1"),
        ("deploy/iris-1", None),
        ("mv/", None),
    ],
)
def test_object_name(ref: str, name: str | None) -> None:
    if name is None:
        with pytest.raises(PluginError, match="not a ModelVersion"):
            object_name(ref)
    else:
        assert object_name(ref) == name


@pytest.mark.parametrize(
    ("action", "arguments"),
    [
        (
            "approve",
            [
                "mlops.dev/approval=approved",
                "mlops.dev/approved-by=bob",
                f"mlops.dev/approved-digest={PINNED}",
            ],
        ),
        (
            "reject",
            [
                "mlops.dev/approval=rejected",
                "mlops.dev/approved-by=bob",
                f"mlops.dev/approved-digest={PINNED}",
            ],
        ),
        ("revoke", ["mlops.dev/approval-", "mlops.dev/approved-by-", "mlops.dev/approved-digest-"]),
    ],
)
def test_plugin_annotations(action: str, arguments: list[str]) -> None:
    assert annotations(action, "bob", PINNED) == arguments


@pytest.mark.parametrize(
    ("argv", "ref", "flags"),
    [
        (["approve", "mv/iris-1"], "mv/iris-1", []),
        (["approve", "mv/iris-1", "-n", "models"], "mv/iris-1", ["--namespace=models"]),
        (["approve", "-n", "models", "mv/iris-1"], "mv/iris-1", ["--namespace=models"]),
        (
            ["approve", "--as", "bob", "mv/iris-1", "--context=prod", "--as-group", "ops"],
            "mv/iris-1",
            ["--context=prod", "--as=bob", "--as-group=ops"],
        ),
        (["approve", "mv/iris-1", "--v=6"], "mv/iris-1", ["--v=6"]),  # passed through
    ],
)
def test_plugin_flags_may_come_anywhere(argv: list[str], ref: str, flags: list[str]) -> None:
    assert parse(argv) == ("approve", ref, flags)


@pytest.mark.parametrize(
    ("ref", "name"),
    [
        ("mdep/iris", "iris"),
        ("modeldeployments.mlops.dev/iris", "iris"),
        ("iris", "iris"),
        ("mv/iris", None),
    ],
)
def test_rollout_commands_name_a_model_deployment(ref: str, name: str | None) -> None:
    assert parse(["promote", ref, "-n", "models"]) == ("promote", ref, ["--namespace=models"])
    if name is None:
        with pytest.raises(PluginError, match="not a ModelDeployment: write mdep/NAME"):
            object_name(ref, DEPLOYMENT_KINDS)
    else:
        assert object_name(ref, DEPLOYMENT_KINDS) == name
