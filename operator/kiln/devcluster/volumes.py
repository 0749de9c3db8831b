"""Pod volumes as directories on this machine.

emptyDir lives in the pod's directory and goes with it; a PersistentVolumeClaim
is `<data dir>/volumes/<namespace>/<claim>`, shared by every pod that mounts it
and kept after they go; configMap, secret, downwardAPI and projected volumes
are written as files, the downward API's again when the pod's metadata changes;
hostPath is the path itself.
"""

from __future__ import annotations

import base64
import logging
import os
import pathlib
from collections.abc import Callable
from typing import Any

from kiln.devcluster import podenv

log = logging.getLogger(__name__)

Object = dict[str, Any]
Lookup = Callable[[str, str], Object | None]

SERVICE_ACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def claim_directory(volumes_root: pathlib.Path, namespace: str, claim: str) -> pathlib.Path:
    return volumes_root / namespace / claim


def _check_paths(files: dict[str, str | bytes]) -> None:
    """Refuse an item path that leaves its volume, by the path's words, as the API server validates
    item paths: the volume is freshly made by the kubelet, so no link in it can lead out."""
    for relative in files:
        parts = pathlib.PurePosixPath(relative).parts
        if not parts or pathlib.PurePosixPath(relative).is_absolute() or ".." in parts:
            raise podenv.ConfigError(f"volume item path {relative!r} escapes its volume")


def _write_files(directory: pathlib.Path, files: dict[str, str | bytes], mode: int | None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for relative, content in files.items():
        parts = pathlib.PurePosixPath(relative).parts
        target = directory.joinpath(*parts)
        if len(parts) > 1:
            target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
        if mode is not None:
            target.chmod(mode)


def _keyed_files(obj: Object | None, source: Object, kind: str, name: str) -> dict[str, str | bytes]:
    if obj is None:
        if source.get("optional"):
            return {}
        raise podenv.ConfigError(f'{"configmap" if kind == "configmaps" else "secret"} "{name}" not found')
    data: dict[str, str | bytes] = {}
    if kind == "secrets":
        data.update({key: base64.b64decode(value) for key, value in (obj.get("data") or {}).items()})
    else:
        data.update(obj.get("data") or {})
        data.update({key: base64.b64decode(value) for key, value in (obj.get("binaryData") or {}).items()})
    items = source.get("items")
    if not items:
        return data
    chosen: dict[str, str | bytes] = {}
    for item in items:
        if item["key"] not in data:
            if source.get("optional"):
                continue
            raise podenv.ConfigError(f"configmap or secret {name} has no key {item['key']}")
        chosen[item["path"]] = data[item["key"]]
    return chosen


def _downward_files(pod: Object, container: Object | None, source: Object) -> dict[str, str | bytes]:
    files: dict[str, str | bytes] = {}
    for item in source.get("items") or []:
        if "fieldRef" in item:
            files[item["path"]] = podenv.field_ref(pod, item["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in item and container is not None:
            files[item["path"]] = podenv.resource_ref(container, item["resourceFieldRef"])
    return files


def _source_files(pod: Object, source: Object, lookup: Lookup, token: str) -> dict[str, str | bytes]:
    container = (pod["spec"].get("containers") or [None])[0]
    if "configMap" in source:
        name = source["configMap"].get("name", "")
        return _keyed_files(lookup("configmaps", name), source["configMap"], "configmaps", name)
    if "secret" in source:
        name = source["secret"].get("name") or source["secret"].get("secretName", "")
        return _keyed_files(lookup("secrets", name), source["secret"], "secrets", name)
    if "downwardAPI" in source:
        return _downward_files(pod, container, source["downwardAPI"])
    if "serviceAccountToken" in source:
        return {source["serviceAccountToken"].get("path", "token"): token}
    return {}


def prepare(
    pod: Object, pod_dir: pathlib.Path, volumes_root: pathlib.Path, lookup: Lookup, token: str, *, write: bool = True
) -> dict[str, pathlib.Path]:
    """Create every volume of the pod; returns each volume's directory by name. Without `write`,
    what the volumes would hold is looked up (a missing source fails alike) but nothing is made, and
    no directory returned (so none is refreshed either)."""
    namespace = pod["metadata"]["namespace"]
    directories: dict[str, pathlib.Path] = {}

    def make(directory: pathlib.Path) -> None:
        if write:
            directory.mkdir(parents=True, exist_ok=True)

    def fill(directory: pathlib.Path, files: dict[str, str | bytes], mode: int | None) -> None:
        _check_paths(files)
        if write:
            _write_files(directory, files, mode)

    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        own = pod_dir / "volumes" / name
        if "persistentVolumeClaim" in volume:
            directory = claim_directory(volumes_root, namespace, volume["persistentVolumeClaim"]["claimName"])
            make(directory)
        elif "hostPath" in volume:
            directory = pathlib.Path(volume["hostPath"]["path"])
            if volume["hostPath"].get("type") == "DirectoryOrCreate":
                make(directory)
        elif "configMap" in volume or "secret" in volume or "downwardAPI" in volume:
            source = {key: volume[key] for key in ("configMap", "secret", "downwardAPI") if key in volume}
            mode = next(iter(source.values())).get("defaultMode")
            fill(own, _source_files(pod, source, lookup, token), mode)
            directory = own
        elif "projected" in volume:
            files: dict[str, str | bytes] = {}
            for source in volume["projected"].get("sources") or []:
                files.update(_source_files(pod, source, lookup, token))
            fill(own, files, volume["projected"].get("defaultMode"))
            directory = own
        else:
            if "emptyDir" not in volume:
                log.info(
                    "volume %s of pod %s/%s: its type is backed by an empty directory here",
                    name,
                    namespace,
                    pod["metadata"]["name"],
                )
            make(own)
            directory = own
        directories[name] = directory
    account = pod_dir / "serviceaccount"
    fill(account, {"token": token, "namespace": namespace}, None)
    directories[""] = account
    return directories if write else {}


def refresh(pod: Object, directories: dict[str, pathlib.Path]) -> None:
    """Rewrite the downward API files of a running pod whose metadata changed, as the kubelet does
    in its sync loop (labels and annotations change under a running pod). Each changed file is
    replaced whole, so a reader never sees half of one."""
    container = (pod["spec"].get("containers") or [None])[0]
    for volume in pod["spec"].get("volumes") or []:
        directory = directories.get(volume["name"])
        if "downwardAPI" in volume:
            sources, mode = [volume["downwardAPI"]], volume["downwardAPI"].get("defaultMode")
        elif "projected" in volume:
            projected = volume["projected"]
            sources = [source["downwardAPI"] for source in projected.get("sources") or [] if "downwardAPI" in source]
            mode = projected.get("defaultMode")
        else:
            continue
        if directory is None:
            continue
        try:
            for source in sources:
                for relative, content in _downward_files(pod, container, source).items():
                    _replace(directory / relative, content if isinstance(content, bytes) else content.encode(), mode)
        except (podenv.ConfigError, OSError) as error:
            log.info("volume %s of pod %s/%s not refreshed: %s", volume["name"], *_key(pod), error)


def _key(pod: Object) -> tuple[str, str]:
    return pod["metadata"]["namespace"], pod["metadata"]["name"]


def _replace(target: pathlib.Path, data: bytes, mode: int | None) -> None:
    if target.exists() and target.read_bytes() == data:
        return
    partial = target.with_name(f".{target.name}.partial")
    partial.write_bytes(data)
    if mode is not None:
        partial.chmod(mode)
    partial.replace(target)


def mounts(container: Object, directories: dict[str, pathlib.Path]) -> dict[str, str]:
    """The container's mountPath -> directory map, with subPath applied."""
    mapped = {SERVICE_ACCOUNT_MOUNT: str(directories[""])}
    for mount in container.get("volumeMounts") or []:
        directory = directories.get(mount["name"])
        if directory is None:
            raise podenv.ConfigError(f'volumeMount "{mount["name"]}" names no volume of the pod')
        if mount.get("subPath"):
            directory = directory / mount["subPath"]
            if not directory.resolve().is_relative_to(directories[mount["name"]].resolve()):
                raise podenv.ConfigError(f"subPath {mount['subPath']!r} escapes its volume")
            directory.mkdir(parents=True, exist_ok=True)
        mapped[mount["mountPath"]] = os.fspath(directory)
    return mapped
