"""API discovery documents: /api, /api/v1, /apis, /apis/{group}, /apis/{group}/{version}."""

from __future__ import annotations

from typing import Any

from kiln.devcluster import kinds

VERSION_INFO = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-kiln-devcluster",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def _resource_entries(resource: kinds.ResourceType) -> list[dict[str, Any]]:
    main: dict[str, Any] = {
        "name": resource.plural,
        "singularName": resource.singular,
        "namespaced": resource.namespaced,
        "kind": resource.kind,
        "verbs": list(resource.verbs),
    }
    if resource.short_names:
        main["shortNames"] = list(resource.short_names)
    if resource.categories:
        main["categories"] = list(resource.categories)
    entries = [main]
    for sub in sorted(resource.subresources):
        verbs = {"log": ["get"], "binding": ["create"]}.get(sub, ["get", "patch", "update"])
        kind = {"scale": "Scale", "binding": "Binding"}.get(sub, resource.kind)
        if sub == "scale":  # the Scale kind lives in autoscaling/v1, whatever group its parent is in
            entries.append(
                {
                    "name": f"{resource.plural}/scale",
                    "singularName": "",
                    "namespaced": resource.namespaced,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": kind,
                    "verbs": verbs,
                }
            )
            continue
        entries.append(
            {
                "name": f"{resource.plural}/{sub}",
                "singularName": "",
                "namespaced": resource.namespaced,
                "kind": kind,
                "verbs": verbs,
            }
        )
    return entries


def resource_list(types: kinds.ResourceTypes, group: str, version: str) -> dict[str, Any]:
    resources = sorted(types.in_group_version(group, version), key=lambda r: r.plural)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [entry for resource in resources for entry in _resource_entries(resource)],
    }


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{name}/{version}", "version": version} for version in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def document(types: kinds.ResourceTypes, parts: list[str]) -> dict[str, Any] | None:
    """The discovery document a path names, or None when the path is not a discovery path."""
    groups = types.group_versions()
    if parts == ["api"]:
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
    if parts == ["api", "v1"]:
        return resource_list(types, "", "v1")
    if parts == ["apis"]:
        listed = [_group(name, versions) for name, versions in sorted(groups.items()) if name]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": listed}
    if len(parts) == 2 and parts[0] == "apis" and parts[1] in groups:
        return {"kind": "APIGroup", "apiVersion": "v1", **_group(parts[1], groups[parts[1]])}
    if len(parts) == 3 and parts[0] == "apis" and parts[2] in groups.get(parts[1], []):
        return resource_list(types, parts[1], parts[2])
    return None
