"""ModelDeployment logic: a track's reference resolves to one servable ModelVersion or
to a refusal that says why."""

from typing import Any

import pytest
from pydantic import ValidationError

from mlops_operator.api.modeldeployment import ModelDeploymentSpec, ModelRef
from mlops_operator.modeldeployment import RefusedError, resolve

STABLE = {"model": "iris", "stable": {"version": "1"}}


def canary(source: dict[str, Any]) -> dict[str, Any]:
    analysis = {"thresholds": {"errorRateIncrease": 0.02}, "source": source}
    return {**STABLE, "canary": {"version": "2", "analysis": analysis}}


@pytest.mark.parametrize(
    ("queries", "error"),
    [
        ({"requests": 'sum(up{job="${service}"})'}, None),
        ({"errors": 'sum(increase(x{pod="${pod}"}[${range}]))'}, "unknown placeholder ${pod}"),
        ({"latencyP99": "x[$]"}, "a $ that is no placeholder"),
    ],
)
def test_prometheus_queries_name_only_known_placeholders(
    queries: dict[str, str], error: str | None
) -> None:
    spec = canary({"type": "prometheus", "url": "http://prometheus:9090", "queries": queries})
    if error is None:
        ModelDeploymentSpec.model_validate(spec)
        return
    with pytest.raises(ValidationError) as raised:
        ModelDeploymentSpec.model_validate(spec)
    field = next(iter(queries))
    assert f"canary.analysis.source.queries.{field}" in str(raised.value).replace("\n", ".")
    assert error in str(raised.value)


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
