"""CustomResourceDefinitions generated from the pydantic models: the single source of truth.

Pydantic writes JSON Schema (2020-12, with `$ref`s, `anyOf` for optionals,
numeric exclusive bounds); Kubernetes wants a *structural* OpenAPI v3 schema
(everything inlined, a type on every node, no `anyOf` but for int-or-string,
boolean exclusive bounds). `structural()` is that translation.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from kiln.api import base, resources

Schema = dict[str, Any]

_DROPPED_KEYS = frozenset({"title", "$defs", "additionalProperties"})


def _one_line_paragraphs(text: str) -> str:
    """Docstrings wrap at the source's width; a description reads better unwrapped."""
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in text.split("\n\n"))


def _resolve(node: Schema, defs: dict[str, Schema]) -> Schema:
    """Inline a `$ref` (or a lone `allOf` wrapper), letting the referring site's keys win."""
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        return _resolve({**target, **siblings}, defs)
    if "allOf" in node and len(node["allOf"]) == 1:
        siblings = {key: value for key, value in node.items() if key != "allOf"}
        return _resolve({**node["allOf"][0], **siblings}, defs)
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        options = [option for option in node["anyOf"] if option.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"a union of {len(options)} types has no structural schema: {node}")
        siblings = {key: value for key, value in node.items() if key != "anyOf"}
        return _resolve({**options[0], **siblings}, defs)
    return node


def _translate(key: str, value: Any, defs: dict[str, Schema]) -> Schema:
    """One keyword of a node, in OpenAPI v3's terms."""
    if key == "properties":
        return {key: {name: structural(child, defs) for name, child in value.items()}}
    if key == "items":
        return {key: structural(value, defs)}
    if key == "description":
        return {key: _one_line_paragraphs(value)}
    if key == "const":
        return {"enum": [value]}
    if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
        return {"minimum" if key == "exclusiveMinimum" else "maximum": value, key: True}
    return {key: copy.deepcopy(value)}


def structural(node: Schema, defs: dict[str, Schema]) -> Schema:
    """Translate one pydantic JSON Schema node into a structural OpenAPI v3 node."""
    node = _resolve(node, defs)
    out: Schema = {}
    for key, value in node.items():
        if key not in _DROPPED_KEYS and not (key == "default" and value is None):
            out.update(_translate(key, value, defs))
    additional = node.get("additionalProperties")
    if "properties" not in node and additional not in (None, False):
        if additional is True or additional == {}:
            out["x-kubernetes-preserve-unknown-fields"] = True
        else:
            out["additionalProperties"] = structural(additional, defs)
    if not out.get("type") and not out.get("x-kubernetes-int-or-string"):
        if "enum" in out:
            out["type"] = "string"
        else:
            out["type"] = "object"
            out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _model_schema(model: type[base.KilnModel]) -> Schema:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return structural(raw, raw.get("$defs", {}))


def open_api_schema(kind: resources.ResourceKind) -> Schema:
    """The openAPIV3Schema of one kind: apiVersion, kind, metadata, spec and status."""
    return {
        "type": "object",
        "description": (kind.model.__doc__ or "").strip(),
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "The versioned schema of this representation: kiln.dev/v1alpha1.",
            },
            "kind": {"type": "string", "description": f"The kind of this object: {kind.kind}."},
            "metadata": {"type": "object"},
            "spec": _model_schema(kind.spec_model),
            "status": _model_schema(kind.status_model),
        },
        "required": ["spec"],
    }


def _printer_column(column: resources.PrinterColumn) -> Schema:
    out: Schema = {"name": column.name, "type": column.type, "jsonPath": column.json_path}
    if column.description:
        out["description"] = column.description
    if column.priority:
        out["priority"] = column.priority
    return out


def custom_resource_definition(kind: resources.ResourceKind) -> Schema:
    """The CustomResourceDefinition of one kind, as `kubectl apply` takes it."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {"app.kubernetes.io/name": "kiln", "app.kubernetes.io/part-of": "kiln"},
        },
        "spec": {
            "group": base.GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": [kind.short_name],
                "categories": [resources.CATEGORY],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": base.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": open_api_schema(kind)},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [_printer_column(c) for c in kind.printer_columns],
                }
            ],
        },
    }


def file_name(kind: resources.ResourceKind) -> str:
    """The file a kind's CRD is written to, controller-gen style: `kiln.dev_trainingjobs.yaml`."""
    return f"{base.GROUP}_{kind.plural}.yaml"


def render(kind: resources.ResourceKind) -> str:
    """The CRD as YAML text, stable from run to run so generated files diff cleanly."""
    header = "# Generated by `kiln crds` from kiln.api; do not edit.\n"
    return header + yaml.safe_dump(custom_resource_definition(kind), sort_keys=False, width=100, allow_unicode=True)


def rendered_files() -> dict[str, str]:
    """Every CRD file by name."""
    return {file_name(kind): render(kind) for kind in resources.KINDS}
