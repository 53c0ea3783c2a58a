"""The CRDs are generated from the pydantic models, structural, and in step with
the samples and the committed files."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_operator.api import RESOURCES, Resource
from mlops_operator.api.common import ApiModel, cel, rules
from mlops_operator.api.crd import render_crd, render_files, structural_schema

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "crds" / "samples"
FORBIDDEN_KEYS = {"$ref", "$defs", "anyOf", "allOf", "oneOf", "title", "const"}


def walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    nodes = [(path, node)]
    for name, child in node.get("properties", {}).items():
        nodes += walk(child, f"{path}.{name}")
    if "items" in node:
        nodes += walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        nodes += walk(node["additionalProperties"], f"{path}{{}}")
    return nodes


def test_committed_generated_files_are_current() -> None:
    stale = [
        p
        for p, text in render_files().items()
        if not (ROOT / p).exists() or (ROOT / p).read_text() != text
    ]
    assert stale == [], "run: python hack/gen_crds.py"


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.kind)
def test_schema_is_structural_and_documented(resource: Resource) -> None:
    for model in (resource.spec, resource.status):
        for path, node in walk(structural_schema(model), model.__name__):
            assert not FORBIDDEN_KEYS & node.keys(), path
            assert node.get("additionalProperties") is not False, path
            assert isinstance(node.get("exclusiveMinimum", False), bool), path
            assert (
                "type" in node
                or node.get("x-kubernetes-int-or-string")
                or node.get("x-kubernetes-preserve-unknown-fields")
            ), path
            if path != model.__name__ and not path.endswith(("[]", "{}")):
                assert node.get("description"), f"{path} has no docstring"


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.kind)
def test_crd_names_columns_and_category(resource: Resource) -> None:
    crd = render_crd(resource)
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == f"{resource.plural}.mlops.dev"
    assert names["categories"] == ["mlops"]
    assert names["shortNames"] == list(resource.short_names)
    (version,) = crd["spec"]["versions"]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]][-1] == "Age"


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.kind)
def test_sample_is_valid_for_the_pydantic_model(resource: Resource) -> None:
    doc = yaml.safe_load((SAMPLES / f"{resource.singular}.yaml").read_text())
    assert doc["kind"] == resource.kind
    assert doc["apiVersion"] == "mlops.dev/v1alpha1"
    spec = resource.spec.model_validate(doc["spec"])
    assert spec.model_dump(by_alias=True, exclude_unset=True) == doc["spec"]


def test_chart_copy_is_crds_kept_on_uninstall() -> None:
    for name in [f"{r.plural}.mlops.dev.yaml" for r in RESOURCES] + ["modelversion-approval.yaml"]:
        chart = list(
            yaml.safe_load_all((ROOT / "helm/mlops-operator/files/crds" / name).read_text())
        )
        plain = list(yaml.safe_load_all((ROOT / "crds" / name).read_text()))
        assert len(chart) == len(plain)
        for kept, document in zip(chart, plain, strict=True):
            annotations = kept["metadata"].pop("annotations")
            assert annotations == {"helm.sh/resource-policy": "keep"}
            assert kept == document


def test_reference_documents_every_kind() -> None:
    reference = (ROOT / "crds" / "README.md").read_text()
    for resource in RESOURCES:
        assert f"## {resource.kind}" in reference
    assert "| `spec.canary.steps[].setWeight` | integer |" in reference


def test_a_subclass_keeps_its_bases_cel_rules_and_adds_its_own() -> None:
    first, second = cel("self.a > 0", "a must be positive"), cel("self.b > 0", "b too")

    class Base(ApiModel):
        model_config = rules(first)
        a: int = 1

    class Child(Base):
        model_config = rules(second)
        b: int = 1

    class Grandchild(Child):
        c: int = 1

    def validations(model: type[ApiModel]) -> Any:
        return model.model_json_schema().get("x-kubernetes-validations")

    assert validations(Base) == [first]
    assert validations(Child) == [first, second]
    assert validations(Grandchild) == [first, second]
