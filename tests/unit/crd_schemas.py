"""The generated CRDs on disk as a test oracle, and the example manifests they must accept.

Two ways of asking "would the API server take this object?":

- `structural_errors`: the openAPIV3Schema through jsonschema's Draft 4 validator
  (OpenAPI v3 schemas use draft-4 boolean exclusive bounds), made strict the way
  `kubectl apply` with server-side field validation is: a field the schema does
  not declare is an error, not silently pruned. It knows nothing of CEL.
- `apiserver_errors`: `kiln.devcluster.schema.validate`, the dev cluster's copy of
  kube-apiserver's validation, which also evaluates the `x-kubernetes-validations`
  CEL rules (transition rules only when the stored object is given).
"""

from __future__ import annotations

import copy
import functools
import pathlib
import re
from typing import Any

import jsonschema
import yaml

from kiln import api
from kiln.api import resources

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CRDS = REPO / "crds"

Object = dict[str, Any]


def crd_path(kind: resources.ResourceKind) -> pathlib.Path:
    return CRDS / f"{api.GROUP}_{kind.plural}.yaml"


@functools.cache
def _crd(kind_name: str) -> Object:
    return yaml.safe_load(crd_path(resources.kind_named(kind_name)).read_text())


def crd(kind_name: str) -> Object:
    """The CustomResourceDefinition of a kind, as written in crds/."""
    return copy.deepcopy(_crd(kind_name))


def open_api_schema(kind_name: str) -> Object:
    """The openAPIV3Schema of a kind's only version, as written in crds/."""
    (version,) = crd(kind_name)["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def strict(schema: Object) -> Object:
    """A copy of the schema that refuses undeclared fields, as kubectl's strict field validation does."""
    schema = copy.deepcopy(schema)
    _forbid_unknown_fields(schema)
    return schema


def _forbid_unknown_fields(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _forbid_unknown_fields(item)
        return
    if not isinstance(node, dict):
        return
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        node.setdefault("additionalProperties", False)
    for value in node.values():
        _forbid_unknown_fields(value)


@functools.cache
def _validator(kind_name: str) -> jsonschema.Draft4Validator:
    schema = strict(open_api_schema(kind_name))
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def field_path(parts: Any) -> str:
    """`spec.strategy.canary.steps[0]` from jsonschema's deque of keys and indexes."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out.lstrip(".")


def structural_errors(obj: Object) -> list[str]:
    """Strict openAPIV3Schema errors, each as `path: message` (kubectl's wording for unknown fields)."""
    errors: list[str] = []
    for error in _validator(obj["kind"]).iter_errors(obj):
        where = field_path(error.absolute_path)
        if error.validator == "additionalProperties":
            declared = error.schema.get("properties", {})
            names = sorted(set(error.instance) - set(declared))
            errors += [f"{where}.{name}: field not declared in schema".lstrip(".") for name in names]
        elif error.validator == "required":
            names = [name for name in error.validator_value if name not in error.instance]
            errors += [f"{where}.{name}: Required value".lstrip(".") for name in names]
        else:
            errors.append(f"{where}: {error.message}" if where else error.message)
    return list(dict.fromkeys(errors))


def apiserver_errors(obj: Object, old: Object | None = None) -> list[Any]:
    """The dev cluster's kube-apiserver validation of obj (an update of old when given), CEL included.

    As kube-apiserver does, the schema's defaults are applied first (the stored
    object had them applied when it was written), so rules may read defaulted fields.
    """
    from kiln.devcluster import schema

    open_api = open_api_schema(obj["kind"])
    obj = copy.deepcopy(obj)
    schema.apply_defaults(open_api, obj)
    if old is not None:
        old = copy.deepcopy(old)
        schema.apply_defaults(open_api, old)
    return schema.validate(open_api, obj, old=old)


def model_for(obj: Object) -> type[api.KilnModel]:
    """The pydantic model of a manifest's kind."""
    return resources.kind_named(obj["kind"]).model


def kiln_documents(path: pathlib.Path) -> list[Object]:
    """The documents of a YAML file that are Kiln objects."""
    return [
        doc
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict) and doc.get("apiVersion") == api.API_VERSION
    ]


def example_files() -> list[pathlib.Path]:
    return sorted(path for path in EXAMPLES.rglob("*") if path.suffix in (".yaml", ".yml"))


def example_documents() -> list[tuple[str, Object]]:
    """Every Kiln object under examples/, with an id like `canary-rollout/modeldeployment.yaml#0`."""
    return [
        (f"{path.relative_to(EXAMPLES)}#{index}", doc)
        for path in example_files()
        for index, doc in enumerate(kiln_documents(path))
    ]


def example(scenario: str) -> Object:
    """A fresh copy of the one Kiln object in examples/<scenario>/."""
    docs = [doc for path in sorted((EXAMPLES / scenario).glob("*.yaml")) for doc in kiln_documents(path)]
    (doc,) = docs
    return copy.deepcopy(doc)


_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _parts(path: str) -> list[str | int]:
    return [int(index) if index else key for key, index in _PATH_PART.findall(path)]


DELETE = object()
"""An edit value that removes the field."""


def edited(obj: Object, path: str, value: Any) -> Object:
    """A copy of obj with the field at a dotted path (`spec.steps[0].setWeight`) set, or DELETEd."""
    obj = copy.deepcopy(obj)
    *parents, last = _parts(path)
    node: Any = obj
    for part in parents:
        node = node[part]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return obj
