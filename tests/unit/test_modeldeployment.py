"""ModelDeployment fields that are not built yet are named, never silently dropped."""

from typing import Any

import pytest

from mlops_operator.api.modeldeployment import ModelDeploymentSpec
from mlops_operator.modeldeployment import ignored_fields

STABLE = {"model": "iris", "stable": {"version": "1"}}


@pytest.mark.parametrize(
    ("extra", "ignored"),
    [
        ({}, []),
        ({"replicas": 3, "serving": {"capture": {"sampleRate": 0.5}}}, []),
        ({"canary": {"version": "2"}}, ["spec.canary"]),
        ({"mirror": {"version": "2", "percent": 10}}, ["spec.mirror"]),
        ({"traffic": {"mode": "router"}}, []),  # the default, spelled out
        ({"traffic": {"mode": "gatewayAPI"}}, ["spec.traffic"]),
        ({"traffic": {"stickyKey": "x-user"}}, ["spec.traffic"]),
        (
            {"canary": {"alias": "challenger"}, "mirror": {"version": "3"}},
            ["spec.canary", "spec.mirror"],
        ),
    ],
)
def test_ignored_fields(extra: dict[str, Any], ignored: list[str]) -> None:
    spec = ModelDeploymentSpec.model_validate({**STABLE, **extra})
    assert ignored_fields(spec) == ignored
