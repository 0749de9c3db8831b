"""The base every Kiln API type derives from, and the types they share.

Validation rules are written once, in CEL, on the class they constrain
(`cel_rules`). They travel into the CRD as `x-kubernetes-validations`, so the
API server refuses a bad manifest, and the same rules run when the operator
parses a manifest with pydantic, so both paths give the same answer. Rules
that compare with `oldSelf` (immutability) need the stored object and run only
on the API server.
"""

from __future__ import annotations

import datetime
import functools
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, Literal

import cel
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StrictInt,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

GROUP: Final = "kiln.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = "kiln.dev/v1alpha1"


@dataclass(frozen=True)
class Rule:
    """One CEL validation rule, as `x-kubernetes-validations` carries it."""

    rule: str
    message: str
    field_path: str | None = None
    reason: Literal["FieldValueInvalid", "FieldValueRequired", "FieldValueForbidden"] | None = None

    @property
    def is_transition(self) -> bool:
        """A transition rule compares with the stored object and needs `oldSelf`."""
        return re.search(r"\boldSelf\b", self.rule) is not None

    def to_schema(self) -> dict[str, str]:
        schema = {"rule": self.rule, "message": self.message}
        if self.field_path:
            schema["fieldPath"] = self.field_path
        if self.reason:
            schema["reason"] = self.reason
        return schema


@functools.cache
def _compiled(rule: str) -> Any:
    return cel.compile(rule)


class KilnModel(BaseModel):
    """Base of every spec and status type: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=False,
    )

    cel_rules: ClassVar[tuple[Rule, ...]] = ()

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        if cls.cel_rules:
            handler.resolve_ref_schema(json_schema)["x-kubernetes-validations"] = [
                rule.to_schema() for rule in cls.cel_rules
            ]
        return json_schema

    @model_validator(mode="after")
    def _check_cel_rules(self) -> KilnModel:
        rules = [rule for rule in self.cel_rules if not rule.is_transition]
        if not rules:
            return self
        wire = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        for rule in rules:
            if _compiled(rule.rule).execute({"self": wire}) is not True:
                where = f"{rule.field_path.lstrip('.')}: " if rule.field_path else ""
                raise ValueError(f"{where}{rule.message}")
        return self

    def to_wire(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase, no empty optionals."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def _matches(pattern: str, what: str, max_length: int) -> Any:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if len(value) > max_length:
            raise ValueError(f"{value!r} is longer than {max_length} characters")
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


def _check_quantity(value: int | str) -> int | str:
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative; a quantity must be zero or more")
        return value
    if not re.fullmatch(QUANTITY_PATTERN, value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity such as 500m, 2, 4Gi")
    return value


Quantity = Annotated[
    StrictInt | str,
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
            "pattern": QUANTITY_PATTERN,
            "minimum": 0,
        }
    ),
]
"""A Kubernetes resource quantity: `2`, `500m`, `16Gi`."""

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
Duration = Annotated[
    str,
    _matches(DURATION_PATTERN, "a duration such as 30s, 5m or 1h30m", 32),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "maxLength": 32}),
]
"""A duration in Go's notation: `500ms`, `30s`, `5m`, `1h30m`."""

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_of(text: str) -> datetime.timedelta:
    """The length of a Duration (`1h30m` is 90 minutes)."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration such as 30s, 5m or 1h30m")
    seconds = sum(float(number) * _DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(text))
    return datetime.timedelta(seconds=seconds)


SEMVER_PATTERN = (
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(-((0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\.(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(\+([0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*))?$"
)
SemVer = Annotated[
    str,
    _matches(SEMVER_PATTERN, "a semantic version such as 1.4.0 or 2.0.0-rc.1", 128),
    WithJsonSchema({"type": "string", "pattern": SEMVER_PATTERN, "maxLength": 128}),
]
"""A semantic version (semver.org 2.0.0): `1.4.0`, `2.0.0-rc.1+build.7`."""

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNSLabel = Annotated[
    str,
    _matches(DNS_LABEL_PATTERN, "a DNS-1123 label (lower-case letters, digits and '-')", 63),
    WithJsonSchema({"type": "string", "pattern": DNS_LABEL_PATTERN, "maxLength": 63}),
]
"""A DNS-1123 label, as Kubernetes names are: lower-case alphanumerics and '-', at most 63."""

SHA256_PATTERN = r"^[a-f0-9]{64}$"
Sha256 = Annotated[
    str,
    _matches(SHA256_PATTERN, "a sha256 digest (64 lower-case hex characters)", 64),
    WithJsonSchema({"type": "string", "pattern": SHA256_PATTERN, "minLength": 64, "maxLength": 64}),
]
"""A sha256 digest as 64 lower-case hex characters."""


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(KilnModel):
    """One observation of an aspect of the object, as the Kubernetes API conventions define it."""

    type: str = Field(max_length=316)
    """The aspect observed, in CamelCase: `Ready` on every kind, plus kind-specific ones."""
    status: ConditionStatus
    """Whether the condition holds: True, False or Unknown."""
    reason: str = Field(max_length=1024)
    """A CamelCase word for why the condition last changed, for machines."""
    message: str = Field(default="", max_length=32768)
    """A sentence for people about the last change."""
    last_transition_time: datetime.datetime
    """When the status last changed."""
    observed_generation: StrictInt | None = Field(default=None, ge=0)
    """The metadata.generation the condition was computed from."""


class ObjectMeta(BaseModel):
    """The part of Kubernetes object metadata Kiln reads; the rest passes through."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int | None = None
