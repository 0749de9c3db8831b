"""Decoding the Kubernetes protobuf wire form, which kubectl's typed generators send.

`kubectl create deployment|job|cronjob|service|priorityclass|quota|role|...|secret` and `kubectl
auth can-i` send their bodies as `application/vnd.kubernetes.protobuf`: the 4-byte magic `k8s\\0`,
then a runtime.Unknown envelope (typeMeta, the raw object bytes). The object is decoded with the
Kubernetes definitions themselves (`protodefs`), then turned into the JSON the API server would
have received, following apimachinery's own JSON forms: Quantity and IntOrString as scalars, Time
as RFC 3339, RawExtension and FieldsV1 as embedded JSON, bytes as base64. Go writes every
non-pointer string even when empty, so an empty string is left out, as `omitempty` leaves it out
of JSON; an empty Time is Go's zero time, which JSON writes as null.
"""

from __future__ import annotations

import base64
import datetime
import functools
import json
import typing
from collections.abc import Callable
from typing import Any

from google.protobuf import descriptor, descriptor_pool, message, message_factory

from kiln.devcluster import errors, protodefs

MAGIC = b"k8s\x00"
Object = dict[str, Any]

_META = "k8s.io.apimachinery.pkg.apis.meta.v1"
_RUNTIME = "k8s.io.apimachinery.pkg.runtime"
_UNKNOWN = f"{_RUNTIME}.Unknown"
# The API groups whose package under k8s.io/api is not the group's first label.
_PACKAGES = {"": "core", "internal.apiserver.k8s.io": "apiserverinternal"}


@functools.cache
def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    definitions = {definition.name: definition for definition in protodefs.load().file}
    added: set[str] = set()

    def add(name: str) -> None:  # a definition's imports go into the pool before it
        if name in added:
            return
        added.add(name)
        for dependency in definitions[name].dependency:
            add(dependency)
        pool.Add(definitions[name])

    for name in definitions:
        add(name)
    return pool


def _message_type(api_version: str, kind: str) -> descriptor.Descriptor | None:
    group, _, version = api_version.rpartition("/")
    package = _PACKAGES.get(group, group.split(".")[0])
    try:
        return _pool().FindMessageTypeByName(f"k8s.io.api.{package}.{version}.{kind}")
    except KeyError:
        return None


def _field(value: message.Message, name: str) -> Any:
    """A field of a message built from descriptors at run time, which no type stub describes."""
    return getattr(value, name)


def _parse(message_type: descriptor.Descriptor, raw: bytes) -> message.Message:
    parsed = message_factory.GetMessageClass(message_type)()
    parsed.ParseFromString(raw)
    return parsed


def _time(value: message.Message, digits: int) -> str | None:
    seconds, nanos = _field(value, "seconds"), _field(value, "nanos")
    if not seconds and not nanos:
        return None
    when = datetime.datetime.fromtimestamp(seconds, datetime.UTC) + datetime.timedelta(microseconds=nanos // 1000)
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{when.microsecond:06d}Z" if digits else f"{text}Z"


def _int_or_string(value: message.Message) -> int | str:
    return str(_field(value, "strVal")) if _field(value, "type") == 1 else int(_field(value, "intVal"))


def _embedded_json(raw: bytes) -> Any:
    return json.loads(raw) if raw else None


def _duration(value: message.Message) -> str:
    return f"{datetime.timedelta(microseconds=_field(value, 'duration') // 1000).total_seconds():g}s"


_SPECIAL: dict[str, Callable[[message.Message], Any]] = {
    "k8s.io.apimachinery.pkg.api.resource.Quantity": lambda value: _field(value, "string"),
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": _int_or_string,
    f"{_META}.Time": lambda value: _time(value, 0),
    f"{_META}.MicroTime": lambda value: _time(value, 6),
    f"{_META}.Duration": _duration,
    f"{_META}.FieldsV1": lambda value: _embedded_json(_field(value, "Raw")),
    f"{_RUNTIME}.RawExtension": lambda value: _embedded_json(_field(value, "raw")),
}


def _is_list_wrapper(message_type: descriptor.Descriptor) -> bool:
    """Go's `type ExtraValue []string`: a message of one repeated `items`, a list in JSON."""
    fields = message_type.fields
    return len(fields) == 1 and fields[0].name == "items" and fields[0].is_repeated


def _scalar(field: descriptor.FieldDescriptor, value: Any) -> Any:
    if field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
        return _json(value)
    if field.type == descriptor.FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode()
    return value


def _json(value: message.Message) -> Any:
    """The Kubernetes JSON form of a decoded message."""
    message_type = typing.cast(descriptor.Descriptor, value.DESCRIPTOR)  # the stubs also name upb's class
    special = _SPECIAL.get(message_type.full_name)
    if special is not None:
        return special(value)
    if _is_list_wrapper(message_type):
        return list(_field(value, "items"))
    out: Object = {}
    for field, field_value in value.ListFields():
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {key: _scalar(value_field, item) for key, item in field_value.items()}
        elif field.is_repeated:
            out[field.name] = [_scalar(field, item) for item in field_value]
        else:
            converted = _scalar(field, field_value)
            if converted is not None and converted != "":
                out[field.name] = converted
    return out


def decode(body: bytes) -> Object:
    """The JSON form of a protobuf-encoded object of any built-in kind."""
    if not body.startswith(MAGIC):
        raise errors.bad_request("a protobuf body must start with the Kubernetes magic number")
    try:
        envelope = _parse(_pool().FindMessageTypeByName(_UNKNOWN), body[len(MAGIC) :])
        type_meta = _field(envelope, "typeMeta")
        api_version, kind = str(type_meta.apiVersion), str(type_meta.kind)
        message_type = _message_type(api_version, kind)
        if message_type is None:
            raise errors.ApiError(
                415,
                "UnsupportedMediaType",
                f"the protobuf body is a {kind} of {api_version or 'no apiVersion'}, which is not a built-in kind "
                "the Kubernetes definitions describe; send JSON or YAML instead (`kubectl apply -f`)",
            )
        obj = _json(_parse(message_type, _field(envelope, "raw")))
    except (message.DecodeError, ValueError, UnicodeDecodeError) as error:
        raise errors.bad_request(f"the protobuf body could not be decoded: {error}") from None
    return {"apiVersion": api_version, "kind": kind, **obj}
