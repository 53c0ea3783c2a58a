"""Render the CRDs and their API reference from the pydantic models.

Kubernetes wants structural OpenAPI v3: no `$ref`, no `anyOf` over types, every
node typed, boolean `exclusiveMinimum`. Pydantic writes JSON Schema 2020-12, so
this module translates one into the other. Pure: no I/O, no client.
"""

import json
from typing import Any

import yaml
from pydantic import BaseModel

from mlops_operator import approval
from mlops_operator.api import RESOURCES, Resource
from mlops_operator.constants import CATEGORY, GROUP, VERSION

JsonSchema = dict[str, Any]
DROPPED_KEYS = {"title", "$defs"}


class SchemaError(ValueError):
    """A model uses a construct that has no structural OpenAPI form."""


def structural_schema(model: type[BaseModel]) -> JsonSchema:
    """The model's JSON schema as a structural, `$ref`-free Kubernetes schema."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return _convert(schema, schema.get("$defs", {}), model.__name__)


def _inline(node: JsonSchema, defs: dict[str, JsonSchema], path: str) -> JsonSchema:
    """Replace `$ref`, single `allOf` and `X | None` with the schema they stand for."""
    node = dict(node)
    while True:
        if "$ref" in node:
            node = {**defs[node.pop("$ref").rsplit("/", 1)[-1]], **node}
        elif "allOf" in node:
            (only,) = node.pop("allOf")
            node = {**only, **node}
        elif "anyOf" in node:
            options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
            if node.get("x-kubernetes-int-or-string"):
                return node
            if len(options) != 1:
                raise SchemaError(f"{path}: a union of several types has no structural form")
            node = {**options[0], **node}
        else:
            return node


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _convert(node: JsonSchema, defs: dict[str, JsonSchema], path: str) -> JsonSchema:
    node = _inline(node, defs, path)
    out: JsonSchema = {}
    for key, value in node.items():
        if key in DROPPED_KEYS or (key == "default" and value is None):
            continue
        if key == "properties":
            out[key] = {name: _convert(sub, defs, f"{path}.{name}") for name, sub in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs, f"{path}[]")
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out[key] = _convert(value, defs, f"{path}{{}}")
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "description":
            # Docstrings wrap at the source's width; kubectl explain wraps its own way.
            out[key] = " ".join(value.split())
        elif key == "default":
            # Unset optional fields are null in pydantic's dump and absent in Kubernetes.
            out[key] = _without_nulls(value)
        else:
            out[key] = value
    if "type" not in out and not (
        out.get("x-kubernetes-int-or-string") or out.get("x-kubernetes-preserve-unknown-fields")
    ):
        raise SchemaError(f"{path}: schema has no type")
    return out


def render_crd(resource: Resource) -> JsonSchema:
    """A complete apiextensions.k8s.io/v1 CustomResourceDefinition."""
    spec = structural_schema(resource.spec)
    status = structural_schema(resource.status)
    version: JsonSchema = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "subresources": {"status": {}},
        "additionalPrinterColumns": [
            {
                key: value
                for key, value in {
                    "name": column.name,
                    "type": column.type,
                    "jsonPath": column.json_path,
                    "description": column.description,
                    "priority": column.priority or None,
                    "format": column.format,
                }.items()
                if value is not None
            }
            for column in resource.columns
        ],
        "schema": {
            "openAPIV3Schema": {
                "type": "object",
                "description": f"{resource.kind}: {(resource.spec.__doc__ or '').strip()}",
                "required": ["spec"],
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "metadata": {"type": "object"},
                    "spec": spec,
                    "status": status,
                },
            }
        },
    }
    if resource.selectable_fields:
        version["selectableFields"] = [{"jsonPath": p} for p in resource.selectable_fields]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{resource.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": resource.kind,
                "listKind": f"{resource.kind}List",
                "plural": resource.plural,
                "singular": resource.singular,
                "shortNames": list(resource.short_names),
                "categories": [CATEGORY],
            },
            "versions": [version],
        },
    }


# The chart renders these through templates/crds.yaml, so that `helm upgrade` upgrades
# them (Helm never touches a chart's crds/), and keeps them on uninstall: deleting a
# CRD deletes every object of its kind.
CHART_CRD_DIR = "helm/mlops-operator/files/crds"
KEEP = {"helm.sh/resource-policy": "keep"}
HEADER = "# Generated by hack/gen_crds.py from mlops_operator.api; do not edit.\n"


def crd_file_name(resource: Resource) -> str:
    return f"{resource.plural}.{GROUP}.yaml"


def render_files() -> dict[str, str]:
    """Every generated file, by path relative to the repository root."""
    files: dict[str, str] = {}
    for resource in RESOURCES:
        crd = render_crd(resource)
        name = crd_file_name(resource)
        files[f"crds/{name}"] = HEADER + _dump([crd])
        files[f"{CHART_CRD_DIR}/{name}"] = HEADER + _dump([_kept(crd)])
    header = (
        "# Generated by hack/gen_crds.py from mlops_operator.approval; do not edit.\n"
        "# Approval of ModelVersions, enforced by the API server (see approval.py).\n"
    )
    policy = approval.policy()
    files[f"crds/{approval.POLICY_FILE}"] = header + _dump(policy)
    files[f"{CHART_CRD_DIR}/{approval.POLICY_FILE}"] = header + _dump([_kept(d) for d in policy])
    files["crds/README.md"] = render_reference()
    return files


class _Dumper(yaml.SafeDumper):
    """No YAML anchors: a schema reused in two places is written out twice, as every
    reader of a CRD expects."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump(documents: list[dict[str, Any]]) -> str:
    return yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, width=100)


def _kept(document: dict[str, Any]) -> dict[str, Any]:
    meta = document["metadata"]
    annotations = {**meta.get("annotations", {}), **KEEP}
    return {**document, "metadata": {**meta, "annotations": annotations}}


def render_reference() -> str:
    """The API reference in Markdown: every field, its type, default, limits and rules."""
    lines = [
        "<!-- Generated by hack/gen_crds.py from mlops_operator.api; do not edit. -->",
        f"# API reference: `{GROUP}/{VERSION}`",
        "",
        "Three namespaced kinds, all in the category `mlops` (`kubectl get mlops`).",
        "Every rule listed is enforced by the API server at admission.",
        "",
    ]
    lines += [
        "## Approval of ModelVersions",
        "",
        f"`{approval.POLICY_FILE}` holds the ValidatingAdmissionPolicy `{approval.POLICY}` "
        "and its binding. A create or update of a ModelVersion that sets, changes or removes "
        f"`{approval.ANNOTATION}` (`approved` or `rejected`), `{approval.APPROVED_BY}` or "
        f"`{approval.APPROVED_DIGEST}` is admitted only if its user holds the verb "
        f"`{approval.VERB}` on that ModelVersion, `{approval.APPROVED_BY}` is that user's name, "
        f"and `{approval.APPROVED_DIGEST}` equals `spec.artifact.digest`. "
        "`kubectl mlops approve mv/NAME` writes all three.",
        "",
    ]
    for resource in RESOURCES:
        names = ", ".join(f"`{n}`" for n in (resource.plural, *resource.short_names))
        lines += [f"## {resource.kind}", "", f"Names: {names}.", ""]
        for part, model in (("spec", resource.spec), ("status", resource.status)):
            lines += [f"### {part}", "", (model.__doc__ or "").strip(), ""]
            lines += [
                "| Field | Type | Required | Default | Description |",
                "|---|---|---|---|---|",
            ]
            rules: list[str] = []
            _reference_rows(structural_schema(model), part, lines, rules)
            lines.append("")
            if rules:
                lines += ["Rules:", "", *rules, ""]
    return "\n".join(lines)


def _type_name(node: JsonSchema) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int or string"
    kind = node.get("type", "object")
    if kind == "array":
        return f"[]{_type_name(node['items'])}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map[string]{_type_name(node['additionalProperties'])}"
    if "enum" in node:
        return " | ".join(str(v) for v in node["enum"])
    return str(kind)


def _limits(node: JsonSchema) -> str:
    parts = []
    for key, label in (
        ("minimum", ">="),
        ("maximum", "<="),
        ("minLength", "len >="),
        ("maxLength", "len <="),
        ("maxItems", "items <="),
        ("pattern", "pattern"),
    ):
        if key in node:
            op = label
            if key == "minimum" and node.get("exclusiveMinimum"):
                op = ">"
            value = f"`{node[key]}`" if key == "pattern" else node[key]
            parts.append(f"{op} {value}")
    return f" ({', '.join(parts)})" if parts else ""


def _reference_rows(node: JsonSchema, path: str, lines: list[str], rules: list[str]) -> None:
    for rule in node.get("x-kubernetes-validations", []):
        rules.append(f"- `{path}`: {rule['message']} (`{rule['rule']}`)")
    if node.get("type") == "array":
        _reference_rows(node["items"], f"{path}[]", lines, rules)
        return
    required = set(node.get("required", []))
    for name, sub in node.get("properties", {}).items():
        child = f"{path}.{name}"
        cells = [
            f"`{child}`",
            _type_name(sub),
            "yes" if name in required else "",
            f"`{json.dumps(sub['default'])}`" if "default" in sub else "",
            " ".join(sub.get("description", "").split()) + _limits(sub),
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        _reference_rows(sub, child, lines, rules)
