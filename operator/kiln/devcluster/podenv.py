"""What a container process sees: its command, environment, working directory and volume paths.

Pure functions over the pod and the objects it refers to, so the kubelet's
rules (downward API, `$(VAR)` expansion, service links, which containers run
as processes) are tested without starting anything.
"""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Callable, Mapping
from typing import Any

from kiln import quantity

Object = dict[str, Any]

_PYTHON = re.compile(r"^python(3(\.\d+)?)?$")
_SHELLS = ("sh", "bash", "/bin/sh", "/bin/bash", "/usr/bin/env")
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class ConfigError(Exception):
    """The container cannot start: a missing ConfigMap, Secret or key (CreateContainerConfigError)."""


def _image_name(image: str) -> str:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name.rsplit(":", 1)[0] if ":" in last else name


def _runs_python(word: str) -> bool:
    base = word.rsplit("/", 1)[-1]
    return bool(_PYTHON.match(base)) or base.startswith("kiln")


def runs_as_process(container: Object, local_images: tuple[str, ...]) -> bool:
    """A container runs as a real process when it runs Python or a Kiln runtime, or its image is local."""
    argv = [*(container.get("command") or []), *(container.get("args") or [])]
    if not argv:
        return False
    if _image_name(str(container.get("image", ""))) in {_image_name(image) for image in local_images}:
        return True
    if _runs_python(argv[0]):
        return True
    if argv[0] in _SHELLS and len(argv) >= 2:
        script = argv[-1] if argv[1] == "-c" or argv[0].endswith("env") else ""
        words = shlex.split(script) if argv[1] == "-c" else argv[1:]
        return bool(words) and _runs_python(words[0])
    return False


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` references: known ones are replaced, `$$` is a literal `$`, others stay."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return variables.get(name, match.group(0))

    return _REFERENCE.sub(replace, text)


def field_ref(pod: Object, path: str) -> str:
    """The downward API's fieldRef paths."""
    metadata, spec, status = pod["metadata"], pod.get("spec", {}), pod.get("status", {})
    match = re.match(r"^metadata\.(labels|annotations)\['(.+)'\]$", path)
    if match:
        return str((metadata.get(match.group(1)) or {}).get(match.group(2), ""))
    values = {
        "metadata.name": metadata.get("name"),
        "metadata.namespace": metadata.get("namespace"),
        "metadata.uid": metadata.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": status.get("hostIP"),
        "status.podIP": status.get("podIP"),
        "status.podIPs": status.get("podIP"),
        "status.hostIPs": status.get("hostIP"),
    }
    if path in ("metadata.labels", "metadata.annotations"):
        return "\n".join(f'{k}="{v}"' for k, v in sorted((metadata.get(path.split(".")[1]) or {}).items()))
    if path not in values:
        raise ConfigError(f'unsupported fieldRef path "{path}"')
    return str(values[path] or "")


def resource_ref(container: Object, reference: Object) -> str:
    """The downward API's resourceFieldRef: a request or limit, in units of the divisor."""
    kind, _, resource = reference["resource"].partition(".")
    amount = ((container.get("resources") or {}).get(kind) or {}).get(resource)
    if amount is None:
        return "0"
    value = quantity.parse(amount) / quantity.parse(reference.get("divisor") or "1")
    return str(-(-value.numerator // value.denominator))  # rounded up, as the kubelet does


Lookup = Callable[[str, str], Object | None]
"""(resource, name) -> the object in the pod's namespace, or None."""


def _decoded(obj: Object, kind: str) -> dict[str, str]:
    if kind == "secrets":
        return {k: base64.b64decode(v).decode(errors="replace") for k, v in (obj.get("data") or {}).items()}
    return {**(obj.get("data") or {})}


def _key_ref(lookup: Lookup, kind: str, reference: Object) -> str | None:
    name, key = reference.get("name", ""), reference["key"]
    obj = lookup(kind, name)
    optional = bool(reference.get("optional"))
    singular = "configmap" if kind == "configmaps" else "secret"
    if obj is None:
        if optional:
            return None
        raise ConfigError(f'{singular} "{name}" not found')
    data = _decoded(obj, kind)
    if key not in data:
        if optional:
            return None
        kind_name = "ConfigMap" if kind == "configmaps" else "Secret"
        raise ConfigError(f"couldn't find key {key} in {kind_name} {obj['metadata'].get('namespace')}/{name}")
    return data[key]


def _value_from(pod: Object, container: Object, lookup: Lookup, variable: Object) -> str | None:
    source = variable["valueFrom"]
    if "fieldRef" in source:
        return field_ref(pod, source["fieldRef"]["fieldPath"])
    if "resourceFieldRef" in source:
        return resource_ref(container, source["resourceFieldRef"])
    if "configMapKeyRef" in source:
        return _key_ref(lookup, "configmaps", source["configMapKeyRef"])
    if "secretKeyRef" in source:
        return _key_ref(lookup, "secrets", source["secretKeyRef"])
    raise ConfigError(f"env {variable['name']}: unsupported valueFrom")


def container_env(pod: Object, container: Object, lookup: Lookup, base: Mapping[str, str]) -> dict[str, str]:
    """The container's variables on top of `base`: envFrom first, then env in order, each expanded."""
    env = dict(base)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, field in (("configmaps", "configMapRef"), ("secrets", "secretRef")):
            reference = source.get(field)
            if reference is None:
                continue
            obj = lookup(kind, reference.get("name", ""))
            if obj is None:
                if reference.get("optional"):
                    continue
                raise ConfigError(
                    f'{"configmap" if kind == "configmaps" else "secret"} "{reference.get("name")}" not found'
                )
            env.update({prefix + key: value for key, value in _decoded(obj, kind).items()})
    for variable in container.get("env") or []:
        name = variable["name"]
        if "valueFrom" not in variable:
            env[name] = expand(str(variable.get("value", "")), env)
            continue
        value = _value_from(pod, container, lookup, variable)
        if value is not None:
            env[name] = value
    return env


def service_links(services: list[Object]) -> dict[str, str]:
    """The docker-link style variables kubelet sets for each Service of the namespace."""
    env: dict[str, str] = {}
    for service in services:
        spec = service.get("spec", {})
        address = spec.get("clusterIP")
        ports = spec.get("ports") or []
        if not address or address == "None" or not ports:
            continue
        prefix = service["metadata"]["name"].upper().replace("-", "_")
        env[f"{prefix}_SERVICE_HOST"] = address
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        for port in ports:
            protocol = port.get("protocol", "TCP")
            if port.get("name"):
                env[f"{prefix}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(port["port"])
            base = f"{prefix}_PORT_{port['port']}_{protocol}"
            env[base] = f"{protocol.lower()}://{address}:{port['port']}"
            env[f"{base}_PROTO"] = protocol.lower()
            env[f"{base}_PORT"] = str(port["port"])
            env[f"{base}_ADDR"] = address
        first = ports[0]
        env[f"{prefix}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{address}:{first['port']}"
    return env


def translate_path(value: str, mounts: Mapping[str, str]) -> str:
    """A path under a volume's mountPath, as the directory that backs it on this machine.

    Processes share the host's filesystem, so `/data/model.skops` in a pod with
    a volume mounted at `/data` becomes `<the volume's directory>/model.skops`;
    the longest mountPath wins. `key=/data/x` style values are translated after the `=`.
    """
    for mount_path in sorted(mounts, key=len, reverse=True):
        match = re.search(rf"(^|=){re.escape(mount_path.rstrip('/'))}(?=/|$)", value)
        if match:
            return value[: match.start()] + match.group(1) + mounts[mount_path] + value[match.end() :]
    return value
