"""Server-side printing: `Table` responses, which kubectl asks for to print `kubectl get`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kiln.devcluster import kinds, objects

Object = dict[str, Any]
Cell = Any


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def _pod_ready(pod: Object) -> str:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    total = len(pod.get("spec", {}).get("containers") or [])
    return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"


def _pod_status(pod: Object) -> str:
    """kubectl's STATUS column: init progress, then the last container's waiting or terminated reason."""
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    status = pod.get("status", {})
    inits = status.get("initContainerStatuses") or []
    for index, container in enumerate(inits):
        state = container.get("state") or {}
        if "terminated" in state and state["terminated"].get("exitCode") == 0:
            continue
        if (state.get("waiting") or {}).get("reason") not in (None, "PodInitializing"):
            return f"Init:{state['waiting']['reason']}"
        return f"Init:{index}/{len(inits)}"
    reason = str(status.get("reason") or status.get("phase") or "Pending")
    running = False
    for container in reversed(status.get("containerStatuses") or []):
        state = container.get("state") or {}
        if (state.get("waiting") or {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state:
            terminated = state["terminated"]
            reason = terminated.get("reason") or f"ExitCode:{terminated.get('exitCode', 0)}"
        elif "running" in state and container.get("ready"):
            running = True
    return "Running" if reason == "Completed" and running else reason


def _restarts(pod: Object) -> int:
    return sum(int(s.get("restartCount", 0)) for s in pod.get("status", {}).get("containerStatuses") or [])


def _ports(service: Object) -> str:
    ports = service.get("spec", {}).get("ports") or []
    return ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in ports) or "<none>"


def _job_status(job: Object) -> str:
    for condition in job.get("status", {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed", "Suspended"):
            return str(condition["type"])
    return "Running"


def _node_status(node: Object) -> str:
    for condition in node.get("status", {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return "Ready" if condition.get("status") == "True" else "NotReady"
    return "Unknown"


def _endpoints(endpoints: Object) -> str:
    addresses = [
        f"{address['ip']}:{port['port']}"
        for subset in endpoints.get("subsets") or []
        for port in subset.get("ports") or [{"port": ""}]
        for address in subset.get("addresses") or []
    ]
    shown = ",".join(addresses[:3])
    return (shown + f" + {len(addresses) - 3} more..." if len(addresses) > 3 else shown) or "<none>"


def _access_modes(claim: Object) -> str:
    return ",".join(_MODES.get(mode, mode) for mode in claim.get("status", {}).get("accessModes") or [])


def _age(obj: Object) -> str:
    return objects.human_age(obj["metadata"].get("creationTimestamp"))


def _last_schedule(cron_job: Object) -> str:
    last = cron_job.get("status", {}).get("lastScheduleTime")
    return objects.human_age(last) if last else "<none>"


Column = tuple[str, str, Callable[[Object], Cell], int]  # name, type, cell, priority
_MODES = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}

_BUILTIN_COLUMNS: dict[str, list[Column]] = {
    "Pod": [
        ("Ready", "string", _pod_ready, 0),
        ("Status", "string", _pod_status, 0),
        ("Restarts", "integer", _restarts, 0),
        ("Age", "string", _age, 0),
        ("IP", "string", lambda o: o.get("status", {}).get("podIP") or "<none>", 1),
        ("Node", "string", lambda o: o.get("spec", {}).get("nodeName") or "<none>", 1),
    ],
    "Deployment": [
        ("Ready", "string", lambda o: f"{o.get('status', {}).get('readyReplicas', 0)}/{o['spec'].get('replicas', 1)}",
         0),
        ("Up-to-date", "integer", lambda o: o.get("status", {}).get("updatedReplicas", 0), 0),
        ("Available", "integer", lambda o: o.get("status", {}).get("availableReplicas", 0), 0),
        ("Age", "string", _age, 0),
    ],
    "ReplicaSet": [
        ("Desired", "integer", lambda o: o["spec"].get("replicas", 1), 0),
        ("Current", "integer", lambda o: o.get("status", {}).get("replicas", 0), 0),
        ("Ready", "integer", lambda o: o.get("status", {}).get("readyReplicas", 0), 0),
        ("Age", "string", _age, 0),
    ],
    "Service": [
        ("Type", "string", lambda o: o["spec"].get("type", "ClusterIP"), 0),
        ("Cluster-IP", "string", lambda o: o["spec"].get("clusterIP") or "<none>", 0),
        ("External-IP", "string", lambda o: "<none>", 0),
        ("Port(s)", "string", _ports, 0),
        ("Age", "string", _age, 0),
    ],
    "Job": [
        ("Status", "string", _job_status, 0),
        ("Completions", "string",
         lambda o: f"{o.get('status', {}).get('succeeded', 0)}/{o['spec'].get('completions', 1)}", 0),
        ("Age", "string", _age, 0),
    ],
    "CronJob": [
        ("Schedule", "string", lambda o: o["spec"].get("schedule", ""), 0),
        ("Timezone", "string", lambda o: o["spec"].get("timeZone") or "<none>", 0),
        ("Suspend", "boolean", lambda o: bool(o["spec"].get("suspend")), 0),
        ("Active", "integer", lambda o: len(o.get("status", {}).get("active") or []), 0),
        ("Last Schedule", "string", _last_schedule, 0),
        ("Age", "string", _age, 0),
    ],
    "HorizontalPodAutoscaler": [
        ("Reference", "string", lambda o: "{kind}/{name}".format(**o["spec"]["scaleTargetRef"]), 0),
        ("MinPods", "integer", lambda o: o["spec"].get("minReplicas", 1), 0),
        ("MaxPods", "integer", lambda o: o["spec"]["maxReplicas"], 0),
        ("Replicas", "integer", lambda o: o.get("status", {}).get("currentReplicas", 0), 0),
        ("Age", "string", _age, 0),
    ],
    "Node": [
        ("Status", "string", _node_status, 0),
        ("Roles", "string", lambda o: "<none>", 0),
        ("Age", "string", _age, 0),
        ("Version", "string", lambda o: o.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", ""), 0),
    ],
    "Endpoints": [
        ("Endpoints", "string", _endpoints, 0),
        ("Age", "string", _age, 0),
    ],
    "EndpointSlice": [
        ("AddressType", "string", lambda o: o.get("addressType", ""), 0),
        ("Ports", "string", lambda o: ",".join(str(p.get("port")) for p in o.get("ports") or []) or "<unset>", 0),
        ("Endpoints", "string",
         lambda o: ",".join(a for e in o.get("endpoints") or [] for a in e.get("addresses", [])) or "<unset>", 0),
        ("Age", "string", _age, 0),
    ],
    "PersistentVolumeClaim": [
        ("Status", "string", lambda o: o.get("status", {}).get("phase", "Pending"), 0),
        ("Volume", "string", lambda o: o.get("spec", {}).get("volumeName", ""), 0),
        ("Capacity", "string", lambda o: o.get("status", {}).get("capacity", {}).get("storage", ""), 0),
        ("Access Modes", "string", _access_modes, 0),
        ("StorageClass", "string", lambda o: o.get("spec", {}).get("storageClassName", ""), 0),
        ("Age", "string", _age, 0),
    ],
    "PriorityClass": [
        ("Value", "integer", lambda o: o.get("value", 0), 0),
        ("Global-Default", "string", lambda o: str(bool(o.get("globalDefault"))).lower(), 0),
        ("Age", "string", _age, 0),
    ],
    "Namespace": [
        ("Status", "string", lambda o: o.get("status", {}).get("phase", "Active"), 0),
        ("Age", "string", _age, 0),
    ],
}  # fmt: skip


def _typed(value: Any, column_type: str) -> Cell:
    if value is None:
        return None
    if column_type == "date":
        return objects.human_age(str(value))
    if column_type == "integer" and isinstance(value, int | float | str):
        try:
            return int(value)
        except ValueError:
            return str(value)
    if column_type in ("string", "") and not isinstance(value, str):
        return value if isinstance(value, int | float | bool) else str(value)
    return value


def _printer_column(column: kinds.PrinterColumn) -> Column:
    def cell(obj: Object) -> Cell:
        values = objects.json_path(obj, column.json_path)
        return _typed(values[0], column.type) if values else None

    shown_type = "string" if column.type == "date" else column.type
    return (column.name, shown_type, cell, column.priority)


def _columns(rt: kinds.ResourceType) -> list[Column]:
    if rt.crd:
        if rt.printer_columns:
            return [_printer_column(column) for column in rt.printer_columns]
        return [("Age", "string", _age, 0)]
    return _BUILTIN_COLUMNS.get(rt.kind, [("Age", "string", _age, 0)])


def table(
    rt: kinds.ResourceType, items: list[Object], resource_version: str, continue_token: str | None = None
) -> Object:
    columns = _columns(rt)
    definitions = [
        {"name": "Name", "type": "string", "format": "name", "description": "Name of the object.", "priority": 0}
    ] + [{"name": name, "type": kind, "format": "", "description": "", "priority": priority}
         for name, kind, _, priority in columns]  # fmt: skip
    rows = [
        {"cells": [obj["metadata"]["name"]] + [cell(obj) for _, _, cell, _ in columns], "object": obj} for obj in items
    ]
    metadata: Object = {"resourceVersion": resource_version}
    if continue_token:
        metadata["continue"] = continue_token
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": definitions,
            "rows": rows}  # fmt: skip
