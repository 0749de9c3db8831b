"""Loaded by every Python process the dev cluster's kubelet starts (it is first on PYTHONPATH).

It gives the process what a pod's network namespace and cluster DNS would:
a server that binds every address (`0.0.0.0` or `""`) binds the pod's own
loopback IP instead, so two pods can both listen on :8080; and cluster names
(`my-svc`, `my-svc.team.svc.cluster.local`, `rank-0.job.team.svc`) resolve
through the dev cluster's hosts file, with the pod namespace's search path.
Nothing here is active outside a dev cluster pod.
"""

from __future__ import annotations

import os
import socket
from typing import Any

_POD_IP = os.environ.get("KILN_DEVCLUSTER_POD_IP", "")
_HOSTS_FILE = os.environ.get("KILN_DEVCLUSTER_HOSTS", "")
_NAMESPACE = os.environ.get("KILN_DEVCLUSTER_NAMESPACE", "default")
_SEARCH = (f"{_NAMESPACE}.svc.cluster.local", "svc.cluster.local", "cluster.local")
_NDOTS = 5
_cache: dict[str, Any] = {"mtime": None, "records": {}}


def _records() -> dict[str, str]:
    try:
        mtime = os.stat(_HOSTS_FILE).st_mtime_ns
    except OSError:
        return {}
    if mtime != _cache["mtime"]:
        records: dict[str, str] = {}
        with open(_HOSTS_FILE, encoding="utf-8") as hosts:
            for line in hosts:
                parts = line.split()
                if len(parts) >= 2:
                    for name in parts[1:]:
                        records.setdefault(name, parts[0])
        _cache.update(mtime=mtime, records=records)
    found: dict[str, str] = _cache["records"]
    return found


def _cluster_address(host: Any) -> str | None:
    if not isinstance(host, str) or not host or host[0].isdigit() or host == "localhost":
        return None
    records = _records()
    name = host.rstrip(".")
    candidates = [name] if host.endswith(".") else []
    if not host.endswith("."):
        searched = [f"{name}.{domain}" for domain in _SEARCH]
        candidates = [*searched, name] if name.count(".") < _NDOTS else [name, *searched]
    for candidate in candidates:
        if candidate in records:
            return records[candidate]
    return None


if _POD_IP:
    _bind = socket.socket.bind
    _getaddrinfo = socket.getaddrinfo
    _gethostbyname = socket.gethostbyname
    _gethostbyname_ex = socket.gethostbyname_ex

    def _pod_bind(self: socket.socket, address: Any) -> None:
        if self.family == socket.AF_INET and isinstance(address, tuple) and address[0] in ("", "0.0.0.0"):
            address = (_POD_IP, *address[1:])
        _bind(self, address)

    def _pod_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host in (None, "", "0.0.0.0", "::"):  # "every address" (asyncio, aiohttp, uvicorn) is the pod's
            return _getaddrinfo(_POD_IP, *args, **kwargs)
        return _getaddrinfo(_cluster_address(host) or host, *args, **kwargs)

    def _pod_gethostbyname(host: str) -> str:
        return _cluster_address(host) or _gethostbyname(host)

    def _pod_gethostbyname_ex(host: str) -> Any:
        address = _cluster_address(host)
        return (host, [], [address]) if address else _gethostbyname_ex(host)

    socket.socket.bind = _pod_bind  # type: ignore[method-assign,assignment]
    socket.getaddrinfo = _pod_getaddrinfo
    socket.gethostbyname = _pod_gethostbyname
    socket.gethostbyname_ex = _pod_gethostbyname_ex
