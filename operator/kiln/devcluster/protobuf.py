"""Decoding the Kubernetes protobuf wire form for the few kinds kubectl's typed generators send.

`kubectl create namespace|configmap|secret|serviceaccount`, `kubectl create
role|clusterrole|rolebinding|clusterrolebinding` and `kubectl auth can-i` send
their bodies as protobuf (`application/vnd.kubernetes.protobuf`): the 4-byte
magic `k8s\\0`, then a runtime.Unknown envelope (typeMeta, raw object bytes).
The field numbers below are those of k8s.io/api's generated.proto for these
kinds; anything else is refused with 415 and a pointer to `kubectl apply -f`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

from kiln.devcluster import errors

MAGIC = b"k8s\x00"
Object = dict[str, Any]
Decoder = Callable[[bytes], Any]

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


def _varint(data: bytes, offset: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if offset >= len(data):
            raise ValueError("truncated varint")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs: ints for varints, bytes for length-delimited fields."""
    offset = 0
    while offset < len(data):
        key, offset = _varint(data, offset)
        number, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            value, offset = _varint(data, offset)
            yield number, value
        elif wire_type == _LENGTH:
            length, offset = _varint(data, offset)
            yield number, data[offset : offset + length]
            offset += length
        elif wire_type in (_FIXED64, _FIXED32):
            offset += 8 if wire_type == _FIXED64 else 4
        else:
            raise ValueError(f"unsupported wire type {wire_type}")


def _text(raw: int | bytes) -> str:
    if isinstance(raw, int):
        raise ValueError("expected a length-delimited field, got a varint")
    return raw.decode()


def _length_delimited(raw: int | bytes) -> bytes:
    if isinstance(raw, int):
        raise ValueError("expected a length-delimited field, got a varint")
    return raw


def _map_entry(value_decoder: Decoder) -> Decoder:
    def decode(raw: bytes) -> tuple[str, Any]:
        entry = dict(_fields(raw))
        return _text(entry.get(1, b"")), value_decoder(_length_delimited(entry.get(2, b"")))

    return decode


def _message(schema: dict[int, tuple[str, Decoder, str]]) -> Decoder:
    """A decoder for a message: field number -> (JSON name, decoder, "one" | "list" | "map")."""

    def decode(raw: bytes) -> Object:
        out: Object = {}
        for number, value in _fields(raw):
            if number not in schema:
                continue
            name, decoder, shape = schema[number]
            decoded: Any = decoder(value) if isinstance(value, bytes) else value
            if shape == "list":
                out.setdefault(name, []).append(decoded)
            elif shape == "map":
                key, item = decoded
                out.setdefault(name, {})[key] = item
            else:
                out[name] = decoded
        return out

    return decode


def _bytes_as_base64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _boolean(value: Any) -> bool:
    return bool(value)


_OBJECT_META = _message(
    {
        1: ("name", _text, "one"),
        2: ("generateName", _text, "one"),
        3: ("namespace", _text, "one"),
        11: ("labels", _map_entry(_text), "map"),
        12: ("annotations", _map_entry(_text), "map"),
        14: ("finalizers", _text, "list"),
    }
)
_LOCAL_OBJECT_REFERENCE = _message({1: ("name", _text, "one")})

_KINDS: dict[tuple[str, str], Decoder] = {
    ("v1", "Namespace"): _message(
        {1: ("metadata", _OBJECT_META, "one"), 2: ("spec", _message({1: ("finalizers", _text, "list")}), "one")}
    ),
    ("v1", "ConfigMap"): _message(
        {
            1: ("metadata", _OBJECT_META, "one"),
            2: ("data", _map_entry(_text), "map"),
            3: ("binaryData", _map_entry(_bytes_as_base64), "map"),
            4: ("immutable", _boolean, "one"),
        }
    ),
    ("v1", "Secret"): _message(
        {
            1: ("metadata", _OBJECT_META, "one"),
            2: ("data", _map_entry(_bytes_as_base64), "map"),
            3: ("type", _text, "one"),
            4: ("stringData", _map_entry(_text), "map"),
            5: ("immutable", _boolean, "one"),
        }
    ),
    ("v1", "ServiceAccount"): _message(
        {
            1: ("metadata", _OBJECT_META, "one"),
            2: ("secrets", _LOCAL_OBJECT_REFERENCE, "list"),
            3: ("imagePullSecrets", _LOCAL_OBJECT_REFERENCE, "list"),
            4: ("automountServiceAccountToken", _boolean, "one"),
        }
    ),
}

# authorization.k8s.io/v1, which `kubectl auth can-i` sends
_RESOURCE_ATTRIBUTES = _message(
    {
        1: ("namespace", _text, "one"),
        2: ("verb", _text, "one"),
        3: ("group", _text, "one"),
        4: ("version", _text, "one"),
        5: ("resource", _text, "one"),
        6: ("subresource", _text, "one"),
        7: ("name", _text, "one"),
    }
)
_NON_RESOURCE_ATTRIBUTES = _message({1: ("path", _text, "one"), 2: ("verb", _text, "one")})
_ACCESS_REVIEW_SPEC = _message(
    {
        1: ("resourceAttributes", _RESOURCE_ATTRIBUTES, "one"),
        2: ("nonResourceAttributes", _NON_RESOURCE_ATTRIBUTES, "one"),
        3: ("user", _text, "one"),
        4: ("groups", _text, "list"),
        6: ("uid", _text, "one"),
    }
)
_SUBJECT_ACCESS_REVIEW = _message({1: ("metadata", _OBJECT_META, "one"), 2: ("spec", _ACCESS_REVIEW_SPEC, "one")})
_KINDS.update(
    {
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): _SUBJECT_ACCESS_REVIEW,
        ("authorization.k8s.io/v1", "SubjectAccessReview"): _SUBJECT_ACCESS_REVIEW,
        ("authorization.k8s.io/v1", "LocalSubjectAccessReview"): _SUBJECT_ACCESS_REVIEW,
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview"): _message(
            {1: ("metadata", _OBJECT_META, "one"), 2: ("spec", _message({1: ("namespace", _text, "one")}), "one")}
        ),
    }
)

# rbac.authorization.k8s.io/v1, which `kubectl create role|clusterrole|rolebinding|clusterrolebinding` send
_POLICY_RULE = _message(
    {
        1: ("verbs", _text, "list"),
        2: ("apiGroups", _text, "list"),
        3: ("resources", _text, "list"),
        4: ("resourceNames", _text, "list"),
        5: ("nonResourceURLs", _text, "list"),
    }
)
_LABEL_SELECTOR = _message(
    {
        1: ("matchLabels", _map_entry(_text), "map"),
        2: (
            "matchExpressions",
            _message({1: ("key", _text, "one"), 2: ("operator", _text, "one"), 3: ("values", _text, "list")}),
            "list",
        ),
    }
)
_BINDING = _message(
    {
        1: ("metadata", _OBJECT_META, "one"),
        2: (
            "subjects",
            _message(
                {1: ("kind", _text, "one"), 2: ("apiGroup", _text, "one"), 3: ("name", _text, "one"),
                 4: ("namespace", _text, "one")}
            ),
            "list",
        ),
        3: ("roleRef", _message({1: ("apiGroup", _text, "one"), 2: ("kind", _text, "one"), 3: ("name", _text, "one")}),
            "one"),
    }
)  # fmt: skip
_KINDS.update(
    {
        ("rbac.authorization.k8s.io/v1", "Role"): _message(
            {1: ("metadata", _OBJECT_META, "one"), 2: ("rules", _POLICY_RULE, "list")}
        ),
        ("rbac.authorization.k8s.io/v1", "ClusterRole"): _message(
            {
                1: ("metadata", _OBJECT_META, "one"),
                2: ("rules", _POLICY_RULE, "list"),
                3: ("aggregationRule", _message({1: ("clusterRoleSelectors", _LABEL_SELECTOR, "list")}), "one"),
            }
        ),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"): _BINDING,
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): _BINDING,
    }
)


def decode(body: bytes) -> Object:
    """The JSON form of a protobuf-encoded object of a kind listed above."""
    if not body.startswith(MAGIC):
        raise errors.bad_request("a protobuf body must start with the Kubernetes magic number")
    try:
        envelope = dict(_fields(body[len(MAGIC) :]))
        type_meta = dict(_fields(_length_delimited(envelope.get(1, b""))))
        api_version, kind = _text(type_meta.get(1, b"")), _text(type_meta.get(2, b""))
        decoder = _KINDS.get((api_version, kind))
        if decoder is None:
            raise errors.ApiError(
                415,
                "UnsupportedMediaType",
                f"the dev cluster decodes protobuf only for Namespace, ConfigMap, Secret, ServiceAccount, RBAC "
                f"objects and the authorization reviews, "
                f"not {kind}; send JSON or YAML instead (`kubectl apply -f` or `kubectl create -f`)",
            )
        obj: Object = decoder(_length_delimited(envelope.get(2, b"")))
    except (ValueError, UnicodeDecodeError) as error:
        raise errors.bad_request(f"the protobuf body could not be decoded: {error}") from None
    return {"apiVersion": api_version, "kind": kind, **obj}
