"""Conditions as the operator writes them: a transition time moves only when the
status does, and conditions not reported again are kept."""

from typing import Any

import pytest

from mlops_operator import conditions
from mlops_operator.conditions import condition, merge

BEFORE, NOW = "2026-12-01T00:00:00Z", "2026-12-02T12:00:00Z"


def written(type_: str, ok: bool | None, when: str, reason: str = "R") -> dict[str, Any]:
    return {**condition(type_, ok, reason, "", 3), "lastTransitionTime": when}


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            None, [condition("Ready", True, "R", "", 3)], [written("Ready", True, NOW)], id="first"
        ),
        pytest.param(
            [written("Ready", True, BEFORE)],
            [condition("Ready", True, "Other", "", 3)],
            [written("Ready", True, BEFORE, reason="Other")],
            id="same status, new reason: the time stays",
        ),
        pytest.param(
            [written("Ready", True, BEFORE)],
            [condition("Ready", False, "R", "", 3)],
            [written("Ready", False, NOW)],
            id="status changed: the time moves",
        ),
        pytest.param(
            [written("Ready", None, BEFORE)],
            [condition("Ready", True, "R", "", 3)],
            [written("Ready", True, NOW)],
            id="from Unknown",
        ),
        pytest.param(
            [written("Approved", True, BEFORE), written("Ready", True, BEFORE)],
            [condition("Ready", True, "R", "", 3)],
            [written("Ready", True, BEFORE), written("Approved", True, BEFORE)],
            id="a condition not reported again is kept, after the new ones",
        ),
    ],
)
def test_merge(
    monkeypatch: pytest.MonkeyPatch,
    old: list[dict[str, Any]] | None,
    new: list[dict[str, Any]],
    expected: list[dict[str, Any]],
) -> None:
    monkeypatch.setattr(conditions, "now", lambda: NOW)
    assert merge(old, new) == expected
