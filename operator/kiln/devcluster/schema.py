"""Structural-schema handling for custom resources, as kube-apiserver does it.

Given a CRD version's openAPIV3Schema this module prunes unknown fields,
applies defaults, and validates an object: types, enums, bounds, lengths,
patterns, required fields, and the `x-kubernetes-validations` CEL rules
(transition rules with `oldSelf` when the stored object is given). Errors are
worded as kube-apiserver words them (`spec.replicas: Invalid value: -1: ...`),
so clients and people see what they would see on a real cluster.

Pure functions over dicts; no I/O.
"""

from __future__ import annotations

import copy
import datetime
import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import cel

from kiln.devcluster import celext

Schema = dict[str, Any]

# The error types of k8s.io/apimachinery/pkg/util/validation/field, with their cause reasons.
REQUIRED = "FieldValueRequired"
INVALID = "FieldValueInvalid"
NOT_SUPPORTED = "FieldValueNotSupported"
TOO_LONG = "FieldValueTooLong"
TOO_MANY = "FieldValueTooMany"
FORBIDDEN = "FieldValueForbidden"
TYPE_INVALID = "FieldValueTypeInvalid"

_NO_VALUE = object()


def _quote(value: Any) -> str:
    """Render a value as Go's `%#v`-ish printing in field errors does: strings quoted."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    if value is None:
        return "null"
    return json.dumps(str(value))


@dataclass(frozen=True)
class FieldError:
    """One invalid field, as a kube-apiserver `field.Error`."""

    field: str
    reason: str
    detail: str = ""
    value: Any = _NO_VALUE

    @property
    def message(self) -> str:
        """The error without the field path, as a StatusCause message carries it."""
        if self.reason == REQUIRED:
            body = "Required value"
        elif self.reason == FORBIDDEN:
            body = "Forbidden"
        elif self.reason == NOT_SUPPORTED:
            body = f"Unsupported value: {_quote(self.value)}"
        elif self.reason == TOO_LONG:
            body = "Too long"
        elif self.reason == TOO_MANY:
            body = f"Too many: {_quote(self.value)}"
        else:
            body = f"Invalid value: {_quote(self.value)}"
        return f"{body}: {self.detail}" if self.detail else body

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _type_name(schema: Schema) -> str:
    return str(schema.get("type", ""))


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


_JSON_TYPES = frozenset({"object", "array", "string", "boolean", "integer", "number"})


def _is_type(value: Any, type_name: str) -> bool:
    """Whether a value has an OpenAPI type; an integer is a number too, and unknown types accept all."""
    actual = json_type(value)
    return type_name not in _JSON_TYPES or actual == type_name or (type_name, actual) == ("number", "integer")


def _valid_format(value: str, fmt: str) -> bool:
    if fmt == "date-time":
        try:
            datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return False
    return True


def _scalar_errors(schema: Schema, value: Any, path: str) -> Iterator[FieldError]:
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(_quote(option) for option in schema["enum"])
        yield FieldError(path, NOT_SUPPORTED, f"supported values: {supported}", value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        yield from _bound_errors(schema, value, path)
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            detail = f"may not be more than {schema['maxLength']} bytes"
            yield FieldError(path, TOO_LONG, detail, value)
        if "minLength" in schema and len(value) < schema["minLength"]:
            detail = f"{path} in body should be at least {schema['minLength']} chars long"
            yield FieldError(path, INVALID, detail, value)
        if "pattern" in schema and re.search(schema["pattern"], value) is None:
            detail = f"{path} in body should match '{schema['pattern']}'"
            yield FieldError(path, INVALID, detail, value)
        if "format" in schema and not _valid_format(value, schema["format"]):
            detail = f"{path} in body must be of type {schema['format']}: {_quote(value)}"
            yield FieldError(path, INVALID, detail, value)


def _bound_errors(schema: Schema, value: float, path: str) -> Iterator[FieldError]:
    if "minimum" in schema:
        low, exclusive = schema["minimum"], schema.get("exclusiveMinimum") is True
        if value < low or (exclusive and value == low):
            relation = "greater than" if exclusive else "greater than or equal to"
            yield FieldError(path, INVALID, f"{path} in body should be {relation} {low}", value)
    if "maximum" in schema:
        high, exclusive = schema["maximum"], schema.get("exclusiveMaximum") is True
        if value > high or (exclusive and value == high):
            relation = "less than" if exclusive else "less than or equal to"
            yield FieldError(path, INVALID, f"{path} in body should be {relation} {high}", value)


def _type_error(schema: Schema, value: Any, path: str) -> FieldError | None:
    if value is None:
        if schema.get("nullable"):
            return None
        return FieldError(path, TYPE_INVALID, f'{path} in body must be of type {_type_name(schema)}: "null"', value)
    if schema.get("x-kubernetes-int-or-string"):
        if json_type(value) in ("integer", "string"):
            return None
        detail = f'{path} in body must be of type integer,string: "{json_type(value)}"'
        return FieldError(path, TYPE_INVALID, detail, value)
    type_name = _type_name(schema)
    if type_name and not _is_type(value, type_name):
        detail = f'{path} in body must be of type {type_name}: "{json_type(value)}"'
        return FieldError(path, TYPE_INVALID, detail, value)
    return None


def _schema_errors(schema: Schema, value: Any, path: str) -> Iterator[FieldError]:
    """OpenAPI errors of a value and everything under it (CEL rules excluded)."""
    type_error = _type_error(schema, value, path)
    if type_error is not None:
        yield type_error
        return
    if value is None:
        return
    yield from _scalar_errors(schema, value, path)
    if isinstance(value, dict):
        yield from _object_errors(schema, value, path)
    elif isinstance(value, list):
        yield from _array_errors(schema, value, path)


def _object_errors(schema: Schema, value: dict[str, Any], path: str) -> Iterator[FieldError]:
    for name in schema.get("required", []):
        if name not in value:
            yield FieldError(_child(path, name), REQUIRED)
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        detail = f"must have at most {schema['maxProperties']} items"
        yield FieldError(path, TOO_MANY, detail, len(value))
    properties = schema.get("properties", {})
    additional = schema.get("additionalProperties")
    for name, child in value.items():
        if name in properties:
            yield from _schema_errors(properties[name], child, _child(path, name))
        elif isinstance(additional, dict):
            yield from _schema_errors(additional, child, f"{path}[{name}]")


def _array_errors(schema: Schema, value: list[Any], path: str) -> Iterator[FieldError]:
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        yield FieldError(path, TOO_MANY, f"must have at most {schema['maxItems']} items", len(value))
    if "minItems" in schema and len(value) < schema["minItems"]:
        detail = f"{path} in body should have at least {schema['minItems']} items"
        yield FieldError(path, INVALID, detail, len(value))
    items = schema.get("items")
    if isinstance(items, dict):
        for index, item in enumerate(value):
            yield from _schema_errors(items, item, f"{path}[{index}]")


@functools.cache
def _program(rule: str) -> Any:
    return cel.compile(rule)


def _cel_value(schema: Schema, value: Any) -> Any:
    """The value as CEL sees it: numbers typed by the schema, not by how JSON spelled them."""
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        return {
            name: _cel_value(properties.get(name) or (additional if isinstance(additional, dict) else {}), child)
            for name, child in value.items()
        }
    if isinstance(value, list):
        items = schema.get("items")
        return [_cel_value(items if isinstance(items, dict) else {}, item) for item in value]
    if schema.get("type") == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _rule_errors(schema: Schema, value: Any, old: Any, path: str) -> Iterator[FieldError]:
    unchanged = old is not _NO_VALUE and value == old
    for rule in schema.get("x-kubernetes-validations", []):
        expression = rule["rule"]
        is_transition = re.search(r"\boldSelf\b", expression) is not None
        # Ratcheting, as kube-apiserver's: a value an update leaves as it was is not held to its
        # rules again (a status write does not re-run the spec's), but transition rules always run.
        if (is_transition and old is _NO_VALUE) or (unchanged and not is_transition):
            continue
        variables = {"self": _cel_value(schema, value)}
        if is_transition:
            variables["oldSelf"] = _cel_value(schema, old)
        field = path + rule.get("fieldPath", "") if path else rule.get("fieldPath", "").lstrip(".")
        try:
            holds = _program(expression).execute(celext.context(variables))
        except Exception as error:  # the CEL library raises several types for evaluation errors
            yield FieldError(field, INVALID, f"rule evaluation error: {error}", _type_name(schema) or value)
            continue
        if holds is not True:
            message = rule.get("message") or f"failed rule: {expression}"
            yield FieldError(field, rule.get("reason", INVALID), message, _type_name(schema) or value)


def _all_rule_errors(schema: Schema, value: Any, old: Any, path: str) -> Iterator[FieldError]:
    """CEL errors of a value and everything under it; `old` is the correlated stored value."""
    if value is None:
        return
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        for name, child in value.items():
            child_schema = properties.get(name) or (additional if isinstance(additional, dict) else None)
            if child_schema is None:
                continue
            child_old = old.get(name, _NO_VALUE) if isinstance(old, dict) else _NO_VALUE
            child_path = _child(path, name) if name in properties else f"{path}[{name}]"
            yield from _all_rule_errors(child_schema, child, child_old, child_path)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        # Items of a plain list are correlated with the stored list's only when it is unchanged.
        same = old == value
        for index, item in enumerate(value):
            yield from _all_rule_errors(schema["items"], item, item if same else _NO_VALUE, f"{path}[{index}]")
    yield from _rule_errors(schema, value, old, path)


def validate(schema: Schema, obj: Any, old: Any | None = None) -> list[FieldError]:
    """Every error of `obj` against `schema`; `old` (the stored object) enables transition rules.

    As kube-apiserver does, CEL rules are not evaluated while a value has the wrong
    type: the answer says so instead.
    """
    errors = list(_schema_errors(schema, obj, ""))
    if any(error.reason == TYPE_INVALID for error in errors):
        detail = (
            "some validation rules were not checked because the object was invalid; "
            "correct the existing errors to complete validation"
        )
        return [*errors, FieldError("", INVALID, detail, None)]
    return errors + list(_all_rule_errors(schema, obj, _NO_VALUE if old is None else old, ""))


def prune(schema: Schema, obj: dict[str, Any]) -> list[str]:
    """Drop the fields the schema does not know, in place; returns their paths.

    The root's `metadata`, `apiVersion` and `kind` are the API server's own and kept.
    Nulls of fields that are not nullable are dropped too, as kube-apiserver does
    before defaulting.
    """
    pruner = _Pruner()
    properties = schema.get("properties", {})
    for name in list(obj):
        if name not in ("apiVersion", "kind", "metadata"):
            pruner.visit(properties.get(name), obj, name, name, schema)
    return pruner.unknown


class _Pruner:
    def __init__(self) -> None:
        self.unknown: list[str] = []

    def visit(self, schema: Schema | None, parent: Any, key: Any, path: str, parent_schema: Schema) -> None:
        if schema is None:
            if not parent_schema.get("x-kubernetes-preserve-unknown-fields"):
                del parent[key]
                self.unknown.append(path)
            return
        value = parent[key]
        if value is None and not schema.get("nullable") and isinstance(parent, dict):
            del parent[key]
        elif isinstance(value, dict):
            self._visit_object(schema, value, path)
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            for index in range(len(value)):
                self.visit(schema["items"], value, index, f"{path}[{index}]", schema)

    def _visit_object(self, schema: Schema, value: dict[str, Any], path: str) -> None:
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        for name in list(value):
            if properties is not None and name in properties:
                self.visit(properties[name], value, name, _child(path, name), schema)
            elif isinstance(additional, dict):
                self.visit(additional, value, name, f"{path}[{name}]", schema)
            elif not schema.get("x-kubernetes-preserve-unknown-fields") and additional is not True:
                del value[name]
                self.unknown.append(_child(path, name))


def apply_defaults(schema: Schema, obj: Any) -> None:
    """Fill in `default`s of absent fields, in place, the whole way down."""
    if isinstance(obj, dict):
        properties = schema.get("properties", {})
        for name, child_schema in properties.items():
            if name not in obj and "default" in child_schema:
                obj[name] = copy.deepcopy(child_schema["default"])
        for name, child in obj.items():
            if name in properties:
                apply_defaults(properties[name], child)
            elif isinstance(schema.get("additionalProperties"), dict):
                apply_defaults(schema["additionalProperties"], child)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            apply_defaults(schema["items"], item)
