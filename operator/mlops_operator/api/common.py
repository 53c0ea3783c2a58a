"""Types shared by the three custom resources.

Every model here is also a CRD schema: field docstrings become the OpenAPI
descriptions and the generated API reference, so they are written for users.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue
from pydantic.alias_generators import to_camel

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SHA256_DIGEST = r"^sha256:[a-f0-9]{64}$"
# Go-style durations with units ms, s, m, h (e.g. "30s", "1h30m"); no sign, so no negatives.
DURATION = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
HTTP_URL = r"^https?://[^\s]+$"

DnsLabel = Annotated[str, Field(pattern=DNS_LABEL, min_length=1, max_length=63)]
ObjectName = Annotated[str, Field(pattern=DNS_SUBDOMAIN, min_length=1, max_length=253)]
Digest = Annotated[str, Field(pattern=SHA256_DIGEST, max_length=71)]
Duration = Annotated[str, Field(pattern=DURATION, max_length=32)]
HttpUrl = Annotated[str, Field(pattern=HTTP_URL, max_length=2048)]
ShortText = Annotated[str, Field(max_length=253)]
LongText = Annotated[str, Field(max_length=4096)]
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
Quantity = Annotated[
    int | str,
    Field(
        json_schema_extra={
            "x-kubernetes-int-or-string": True,
            "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
            r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
        }
    ),
]


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, JsonValue]:
    """One `x-kubernetes-validations` entry; `message` names the field it is about."""
    entry: dict[str, JsonValue] = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


CEL_RULES = "x-kubernetes-validations"

SourceType = Literal["pods", "prometheus", "url"]
"""Where an operator-side reading comes from: the track's pods, Prometheus, or one URL."""
URL_UNLESS_PODS = cel(
    "self.type == 'pods' || has(self.url)", "url is required for this source type", ".url"
)
"""The rule every source with a SourceType keeps: only pods need no url."""


def rules(*entries: dict[str, JsonValue]) -> ConfigDict:
    """Model config carrying CEL rules; a subclass keeps its bases' rules (ApiModel)."""
    validations: list[JsonValue] = list(entries)
    return ConfigDict(json_schema_extra={CEL_RULES: validations})


class ApiModel(BaseModel):
    """Base of every CRD schema model: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Pydantic's config merge lets a subclass's rules() replace its base's: put the
        bases' rules back, first, so that a subclass can only add rules."""
        super().__pydantic_init_subclass__(**kwargs)
        merged: list[JsonValue] = []
        for base in reversed(cls.__mro__):
            extra = vars(base).get("model_config", {}).get("json_schema_extra")
            for rule in extra.get(CEL_RULES, []) if isinstance(extra, dict) else []:
                if rule not in merged:
                    merged.append(rule)
        if merged:
            cls.model_config = {**cls.model_config, "json_schema_extra": {CEL_RULES: merged}}


class Condition(ApiModel):
    """A metav1.Condition: one aspect of the object's state, for kubectl wait and Argo CD."""

    type: Annotated[str, Field(max_length=316, pattern=r"^[A-Za-z][A-Za-z0-9]*$")]
    """Condition type, e.g. Ready, Progressing, Degraded."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    reason: Annotated[
        str, Field(max_length=1024, pattern=r"^([A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?)?$")
    ]
    """CamelCase reason a program can switch on."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """What a person should know or do."""
    last_transition_time: Timestamp
    """When the status last changed."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The .metadata.generation this condition was computed from."""


Conditions = Annotated[
    list[Condition],
    Field(
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
]


class SecretKeyRef(ApiModel):
    """A key in a Secret in the same namespace."""

    name: ObjectName
    """Secret name."""
    key: Annotated[str, Field(min_length=1, max_length=253)]
    """Key within the Secret."""


class ResourceRequirements(ApiModel):
    """CPU, memory and other resources, as in a container spec."""

    requests: Annotated[dict[str, Quantity], Field(max_length=16)] | None = None
    """Minimum resources the scheduler reserves."""
    limits: Annotated[dict[str, Quantity], Field(max_length=16)] | None = None
    """Maximum resources the container may use."""


class EnvVar(ApiModel):
    """An environment variable for the serving container."""

    name: Annotated[
        str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    ]
    """Variable name."""
    value: LongText | None = None
    """Literal value."""
    value_from: (
        Annotated[
            dict[str, Any], Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
        ]
        | None
    ) = None
    """A core/v1 EnvVarSource (secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef)."""


TrackName = Literal["stable", "canary", "mirror"]
Version = Annotated[
    str, Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
]
"""A ModelVersion's spec.version, e.g. "3" or "2024.06.1"."""
