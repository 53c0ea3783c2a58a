"""ModelDeployment logic: fields not built yet are named, never silently dropped; a
track's reference resolves to one servable ModelVersion or to a refusal that says why."""

from typing import Any

import pytest

from mlops_operator.api.modeldeployment import ModelDeploymentSpec, ModelRef
from mlops_operator.modeldeployment import RefusedError, ignored_fields, resolve

STABLE = {"model": "iris", "stable": {"version": "1"}}


@pytest.mark.parametrize(
    ("extra", "ignored"),
    [
        ({}, []),
        ({"replicas": 3, "serving": {"capture": {"sampleRate": 0.5}}}, []),
        ({"canary": {"version": "2"}}, []),
        ({"mirror": {"version": "2", "percent": 10}}, []),
        ({"traffic": {"mode": "router"}}, []),  # the default, spelled out
        ({"traffic": {"mode": "replicas"}}, []),
        ({"traffic": {"mode": "gatewayAPI", "gateway": {"name": "web"}}}, []),
        ({"traffic": {"stickyKey": "x-user"}}, []),
        (
            {
                "canary": {
                    "version": "2",
                    "analysis": {
                        "thresholds": {"errorRate": 0.1, "predictionDrift": 0.2},
                        "source": {"type": "prometheus", "url": "http://prometheus:9090"},
                    },
                }
            },
            ["spec.canary.analysis.source.type prometheus (pods is read)"],
        ),
    ],
)
def test_ignored_fields(extra: dict[str, Any], ignored: list[str]) -> None:
    spec = ModelDeploymentSpec.model_validate({**STABLE, **extra})
    assert ignored_fields(spec) == ignored


def version(name: str, number: str, **artifact: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "version": number,
            "aliases": ["champion"] if number == "1" else [],
            "artifact": {"uri": f"s3://models/{name}.tar.gz", "digest": DIGEST, **artifact},
        },
    }


DIGEST = "sha256:" + "ab" * 32
REJECTED = {"conditions": [{"type": "ArtifactVerified", "status": "False", "message": "bad"}]}


@pytest.mark.parametrize(
    ("ref", "versions", "name"),
    [
        ({"version": "1"}, [version("iris-1", "1")], "iris-1"),
        ({"alias": "champion"}, [version("iris-1", "1"), version("iris-2", "2")], "iris-1"),
    ],
)
def test_a_ref_resolves_to_its_model_version(
    ref: dict[str, str], versions: list[dict[str, Any]], name: str
) -> None:
    resolved = resolve(ModelRef(**ref), "iris", versions, "stable", False)
    assert (resolved.object_name, resolved.digest) == (name, DIGEST)


@pytest.mark.parametrize(
    ("ref", "versions", "approval", "reason"),
    [
        ({"version": "3"}, [version("iris-1", "1")], False, "ModelVersionNotFound"),
        ({"version": "1"}, [version("a", "1"), version("b", "1")], False, "AmbiguousModelVersion"),
        ({"version": "1"}, [version("iris-1", "1")], True, "NotApproved"),
        ({"version": "1"}, [{**version("iris-1", "1"), "status": REJECTED}], False,
         "ArtifactNotVerified"),
        ({"version": "1"}, [version("iris-1", "1", format="joblib")], False,
         "ArtifactNotServable"),
    ],
)  # fmt: skip
def test_a_ref_that_cannot_be_served_is_refused_saying_why(
    ref: dict[str, str], versions: list[dict[str, Any]], approval: bool, reason: str
) -> None:
    with pytest.raises(RefusedError) as refused:
        resolve(ModelRef(**ref), "iris", versions, "stable", approval)
    assert refused.value.reason == reason
    assert refused.value.message.startswith("stable: ")
