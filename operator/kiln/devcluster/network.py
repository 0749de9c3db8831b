"""The dev cluster's network: loopback IPs, Service endpoints, a kube-proxy, and cluster DNS names.

Every pod gets its own address in 127.244.0.0/16 and every ClusterIP Service
one in 127.96.0.0/16 (Linux routes all of 127.0.0.0/8 to the loopback
interface), so two pods can both listen on :8080 and `http://<clusterIP>:<port>`
works from inside and outside the cluster. The endpoints controller keeps
Endpoints and EndpointSlices from Service selectors and pod readiness; the
proxy forwards each connection to one ready endpoint; the DNS controller
writes a hosts file of Service and pod names that the kubelet hands to its
processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import itertools
import logging
import random
import re
from collections.abc import Container, Iterable
from typing import Any

from kiln.devcluster import controllers, errors, kinds, registry, selectors, store, workloads
from kiln.devcluster.controllers import ENDPOINT_SLICE, ENDPOINTS, POD, SERVICE, Key

log = logging.getLogger(__name__)

Object = dict[str, Any]

POD_NETWORK = ipaddress.ip_network("127.244.0.0/16")
SERVICE_NETWORK = ipaddress.ip_network("127.96.0.0/16")
CLUSTER_DOMAIN = "cluster.local"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
PROXY_CONNECT_TIMEOUT_SECONDS = 5.0


ALLOCATION_OFFSET = random.SystemRandom().randrange(0, 250) * 256
"""Where this process starts handing out addresses in each range: dev clusters running side by side
on one machine (a demo and a test run, say) share the loopback, so each starts at a random /24."""


def next_free_address(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network, used: Container[str], offset: int = 0
) -> str:
    """The first address of the range not in `used`, counting from `offset` and wrapping around."""
    first = network.network_address + 2  # .0 is the network, .1 its gateway by convention
    count = network.num_addresses - 3  # and the last is the broadcast address
    for step in range(count):
        address = str(first + (offset + step) % count)
        if address not in used:
            return address
    raise errors.ApiError(500, "InternalError", f"the range {network} is full")


class AddressRange:
    """Hands out a range's addresses in turn: each search starts after the address last given, so
    an allocation costs one step, not a scan past every address in use, and a freed address is not
    handed out again at once (as kube's allocators avoid)."""

    def __init__(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network, offset: int = 0) -> None:
        self._network = network
        self._next = offset

    def allocate(self, used: Container[str]) -> str:
        address = next_free_address(self._network, used, self._next)
        self._next = int(ipaddress.ip_address(address)) - int(self._network.network_address) - 1
        return address


def allocate_cluster_ip(cluster: registry.Registry, rt: kinds.ResourceType, obj: Object, old: Object | None) -> None:
    """Admission for Services: a ClusterIP Service without an address gets one; the address is immutable."""
    if rt.kind != "Service":
        return
    spec = obj.setdefault("spec", {})
    if old is not None and not spec.get("clusterIP") and old.get("spec", {}).get("clusterIP"):
        spec["clusterIP"] = old["spec"]["clusterIP"]
        spec["clusterIPs"] = old["spec"].get("clusterIPs", [old["spec"]["clusterIP"]])
    if spec.get("type", "ClusterIP") == "ExternalName":
        return
    if not spec.get("clusterIP"):
        used = {s.get("spec", {}).get("clusterIP", "") for s in cluster.store.list(SERVICE)}
        spec["clusterIP"] = next_free_address(SERVICE_NETWORK, used, ALLOCATION_OFFSET)
    if spec["clusterIP"] != "None":
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    else:
        spec.setdefault("clusterIPs", ["None"])


def _target_port(service_port: Object, pod: Object) -> int | None:
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for container in pod.get("spec", {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target:
                return int(port["containerPort"])
    return None


def selected_pods(service: Object, pods: Iterable[Object]) -> list[Object]:
    selector = service.get("spec", {}).get("selector")
    return [
        pod
        for pod in pods
        if pod.get("status", {}).get("podIP")
        and pod.get("status", {}).get("phase") not in ("Succeeded", "Failed")
        and all((pod["metadata"].get("labels") or {}).get(k) == v for k, v in (selector or {}).items())
    ]


def _address(pod: Object, service: Object) -> Object:
    metadata = pod["metadata"]
    address: Object = {
        "ip": pod["status"]["podIP"],
        "nodeName": pod["spec"].get("nodeName"),
        "targetRef": {
            "kind": "Pod",
            "namespace": metadata["namespace"],
            "name": metadata["name"],
            "uid": metadata["uid"],
        },
    }
    if pod["spec"].get("hostname") and pod["spec"].get("subdomain") == service["metadata"]["name"]:
        address["hostname"] = pod["spec"]["hostname"]  # what gives the pod its DNS name under the Service
    return address


def endpoints_for(service: Object, pods: list[Object]) -> list[Object]:
    """Endpoints subsets: pods grouped by the ports they resolve to, ready or not; terminating pods
    leave unless the Service publishes not-ready addresses."""
    ports = service.get("spec", {}).get("ports") or []
    publish_all = bool(service.get("spec", {}).get("publishNotReadyAddresses"))
    subsets: dict[tuple[tuple[str, int, str], ...], Object] = {}
    for pod in sorted(selected_pods(service, pods), key=lambda p: p["status"]["podIP"]):
        resolved = []
        for port in ports:
            number = _target_port(port, pod)
            if number is not None:
                resolved.append((port.get("name", ""), number, port.get("protocol", "TCP")))
        if ports and not resolved:
            continue
        key = tuple(resolved)
        subset = subsets.setdefault(
            key,
            {
                "ports": [
                    {**({"name": name} if name else {}), "port": number, "protocol": protocol}
                    for name, number, protocol in resolved
                ]
            },
        )
        terminating = bool(pod["metadata"].get("deletionTimestamp"))
        if terminating and not publish_all:
            continue
        field = "addresses" if controllers.is_pod_ready(pod) or publish_all else "notReadyAddresses"
        subset.setdefault(field, []).append(_address(pod, service))
    return [subset for subset in subsets.values() if subset.get("addresses") or subset.get("notReadyAddresses")]


def endpoint_slice_for(service: Object, pods: list[Object]) -> Object:
    metadata = service["metadata"]
    slice_ports: list[Object] = []
    endpoints = []
    for subset in endpoints_for(service, pods):
        slice_ports = slice_ports or subset["ports"]
        for field, ready in (("addresses", True), ("notReadyAddresses", False)):
            for address in subset.get(field, []):
                endpoints.append(
                    {
                        "addresses": [address["ip"]],
                        "conditions": {"ready": ready, "serving": ready, "terminating": False},
                        "targetRef": address["targetRef"],
                        **({"nodeName": address["nodeName"]} if address.get("nodeName") else {}),
                        **({"hostname": address["hostname"]} if address.get("hostname") else {}),
                    }
                )
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{metadata['name']}-{hashlib.sha256(metadata['uid'].encode()).hexdigest()[:5]}",
            "namespace": metadata["namespace"],
            "labels": {
                SERVICE_NAME_LABEL: metadata["name"],
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
            "ownerReferences": [controllers.owner_reference(service)],
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": slice_ports,
    }


class EndpointsController(controllers.Controller):
    """Endpoints and EndpointSlices for every Service with a selector.

    Pods are indexed by label and Services by selector, as the store changes, so neither a pod's
    event nor a Service's reconcile scans every object: one Service per TrainingJob makes that
    quadratic in a busy cluster."""

    name = "endpoint-controller"

    def __init__(self, cluster: registry.Registry) -> None:
        super().__init__(cluster)
        self._pods = store.LabelIndex(POD)
        self._pods.fill(self.client.list(POD))
        self._selectors = store.LabelIndex(SERVICE, lambda service: service.get("spec", {}).get("selector") or {})
        self._selectors.fill(self.client.list(SERVICE))

    def initial_keys(self) -> Iterable[Key]:
        return self.keys_of(SERVICE)

    def keys_for(self, event: store.Event) -> Iterable[Key]:
        self._pods.observe(event)
        self._selectors.observe(event)
        if event.resource == SERVICE:
            return [controllers.object_key(event)]
        if event.resource == POD:
            namespace = event.object["metadata"].get("namespace", "")
            labels = [event.object["metadata"].get("labels") or {}]
            if event.previous is not None:
                labels.append(event.previous["metadata"].get("labels") or {})
            keys = []
            for name in sorted(set().union(*(self._selectors.having_any(namespace, lab) for lab in labels))):
                service = self.client.get(SERVICE, namespace, name)
                selector = (service or {}).get("spec", {}).get("selector")
                if selector and any(selectors.selector_matches({"matchLabels": selector}, lab) for lab in labels):
                    keys.append((namespace, name))
            return keys
        return ()

    async def reconcile(self, key: Key) -> float | None:
        namespace, name = key
        service = self.client.get(SERVICE, namespace, name)
        if service is None or not service.get("spec", {}).get("selector"):
            return None
        names = self._pods.having_all(namespace, service["spec"]["selector"])
        pods = [pod for pod in (self.client.get(POD, namespace, name) for name in names) if pod is not None]
        subsets = endpoints_for(service, pods)
        labels = dict(service["metadata"].get("labels") or {})
        endpoints: Object = {"metadata": {"name": name, "namespace": namespace, "labels": labels}, "subsets": subsets}
        self._put(ENDPOINTS, endpoints, {"subsets": subsets, "metadata": {"labels": labels}})
        wanted = endpoint_slice_for(service, pods)
        self._put(ENDPOINT_SLICE, wanted, {key: wanted[key] for key in ("endpoints", "ports")})
        return None

    def _put(self, resource: str, desired: Object, fields: Object) -> None:
        metadata = desired["metadata"]
        current = self.client.get(resource, metadata["namespace"], metadata["name"])
        if current is None:
            self.client.create(resource, metadata["namespace"], desired)
            return
        # Shallow: the fields put are replaced whole, and the registry copies what it writes.
        updated = {**current, "metadata": {**current["metadata"]}}
        for field, value in fields.items():
            if field == "metadata":
                updated["metadata"].update(value)
            else:
                updated[field] = value
        if not updated.get("subsets") and resource == ENDPOINTS:
            updated.pop("subsets", None)
        if updated != current:  # most pod events (a status write) change no endpoint
            self.client.update(resource, updated)


def ready_targets(cluster: registry.Registry, service: Object, port: Object) -> list[tuple[str, int]]:
    """(ip, port) of the ready endpoints behind one Service port."""
    metadata = service["metadata"]
    endpoints = cluster.store.get(ENDPOINTS, metadata["namespace"], metadata["name"]) or {}
    name = port.get("name", "")
    targets: list[tuple[str, int]] = []
    for subset in endpoints.get("subsets") or []:
        numbers = [p["port"] for p in subset.get("ports") or [] if p.get("name", "") == name]
        for address in subset.get("addresses") or []:
            targets.extend((address["ip"], number) for number in numbers)
    return targets


def _tcp_ports(service: Object) -> dict[tuple[str, int], str]:
    """The ClusterIP and port of each of a Service's TCP ports, with the port's name."""
    address = service.get("spec", {}).get("clusterIP")
    if not address or address == "None":
        return {}
    return {
        (address, int(port["port"])): port.get("name", "")
        for port in service["spec"].get("ports") or []
        if port.get("protocol", "TCP") == "TCP"
    }


class ServiceProxy(controllers.Controller):
    """kube-proxy in userspace mode: a TCP listener on each ClusterIP:port, round-robin to ready endpoints."""

    name = "kube-proxy"

    def __init__(self, cluster: registry.Registry) -> None:
        super().__init__(cluster)
        self.registry = cluster
        self._servers: dict[tuple[str, int], asyncio.Server] = {}
        self._routes: dict[tuple[str, int], tuple[str, str, str]] = {}
        """Each listener's Service (namespace, name, port name): read when a connection comes, so a
        ClusterIP handed to a new Service reaches the new one, whichever of the two Services' passes
        comes first."""
        self._listens: dict[Key, set[tuple[str, int]]] = {}
        """The addresses and ports each Service was given listeners for."""
        self._turns: dict[tuple[str, str], itertools.count[int]] = {}
        self._connections: set[asyncio.Task[None]] = set()

    def initial_keys(self) -> Iterable[Key]:
        return self.keys_of(SERVICE)

    def keys_for(self, event: store.Event) -> Iterable[Key]:
        return [controllers.object_key(event)] if event.resource == SERVICE else ()

    async def reconcile(self, key: Key) -> float | None:
        """One Service's listeners: one pass per Service changed, never a pass over every Service."""
        namespace, name = key
        service = self.client.get(SERVICE, namespace, name)
        wanted = _tcp_ports(service) if service is not None else {}
        for listen in self._listens.pop(key, set()) - set(wanted):
            route = self._routes.get(listen)
            if route is not None and route[:2] != key:
                continue  # taken over by another Service, whose listener it is now
            self._routes.pop(listen, None)
            server = self._servers.pop(listen, None)
            if server is not None:  # None: it could not listen
                server.close()
        if wanted:
            self._listens[key] = set(wanted)
        for listen, port_name in wanted.items():
            self._routes[listen] = (namespace, name, port_name)
            if listen not in self._servers:
                try:
                    self._servers[listen] = await asyncio.start_server(self._forwarder(listen), *listen)
                except OSError as error:
                    log.warning("kube-proxy: cannot listen on %s:%s: %s", *listen, error)
        return None

    def _forwarder(self, listen: tuple[str, int]) -> Any:
        async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._connections.add(task)
            try:
                route = self._routes.get(listen)
                if route is not None:
                    await self._forward(*route, reader, writer)
            finally:
                self._connections.discard(task)
                writer.close()

        return forward

    async def _forward(
        self, namespace: str, name: str, port_name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        service = self.client.get(SERVICE, namespace, name)
        port = next(
            (p for p in (service or {}).get("spec", {}).get("ports") or [] if p.get("name", "") == port_name), None
        )
        if service is None or port is None:
            return
        targets = ready_targets(self.registry, service, port)
        if not targets:
            return  # no ready endpoint: the connection is refused, as kube-proxy's REJECT rule does
        turn = next(self._turns.setdefault((namespace, name), itertools.count()))
        host, number = targets[turn % len(targets)]
        try:
            upstream_reader, upstream_writer = await asyncio.wait_for(
                asyncio.open_connection(host, number), PROXY_CONNECT_TIMEOUT_SECONDS
            )
        except (OSError, TimeoutError):
            return
        try:
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        finally:
            upstream_writer.close()

    async def close(self) -> None:
        for server in self._servers.values():
            server.close()
        for task in list(self._connections):
            task.cancel()
        self._servers.clear()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
    with contextlib.suppress(OSError):
        if writer.can_write_eof():
            writer.write_eof()


def dns_records(services: list[Object], endpoints: list[Object], pods: list[Object]) -> dict[str, list[str]]:
    """Fully qualified names to addresses, as CoreDNS's kubernetes plugin answers them."""
    records: dict[str, list[str]] = {}
    by_service = {(e["metadata"]["namespace"], e["metadata"]["name"]): e for e in endpoints}
    for service in services:
        metadata, spec = service["metadata"], service.get("spec", {})
        fqdn = f"{metadata['name']}.{metadata['namespace']}.svc.{CLUSTER_DOMAIN}"
        if spec.get("clusterIP") and spec["clusterIP"] != "None":
            records[fqdn] = [spec["clusterIP"]]
            continue
        for subset in (by_service.get((metadata["namespace"], metadata["name"])) or {}).get("subsets") or []:
            for address in subset.get("addresses") or []:
                records.setdefault(fqdn, []).append(address["ip"])
                if address.get("hostname"):
                    records[f"{address['hostname']}.{fqdn}"] = [address["ip"]]
    for pod in pods:
        status, metadata = pod.get("status", {}), pod["metadata"]
        if not status.get("podIP") or not workloads.is_active(pod):
            continue
        dashed = status["podIP"].replace(".", "-")
        records[f"{dashed}.{metadata['namespace']}.pod.{CLUSTER_DOMAIN}"] = [status["podIP"]]
    return records


_HOST_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+$")


def search_names(name: str, namespace: str) -> list[str]:
    """The names a pod's resolver tries, with cluster DNS's search path and ndots 5."""
    if name.endswith("."):
        return [name.rstrip(".")]
    searched = [
        f"{name}.{domain}" for domain in (f"{namespace}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN)
    ]
    return [*searched, name] if name.count(".") < 5 else [name, *searched]


def lookup(records: dict[str, list[str]], name: str, namespace: str) -> str | None:
    for candidate in search_names(name, namespace):
        if records.get(candidate):
            return records[candidate][0]
    return None


def looks_like_cluster_name(value: str, services: set[str]) -> bool:
    """A dotted name inside the cluster: `<x>.svc[.cluster.local]`, or `<host>.<service>` of a Service here."""
    if not _HOST_NAME.match(value) or value.replace(".", "").isdigit():
        return False
    labels = value.split(".")
    if value.endswith(f".{CLUSTER_DOMAIN}") or labels[-1] == "svc" or "svc" in labels:
        return True
    return labels[1] in services


def hosts_text(records: dict[str, list[str]]) -> str:
    return "".join(f"{address} {name}\n" for name, addresses in sorted(records.items()) for address in addresses)


class DnsController(controllers.FileWriter):
    """Keeps the cluster's hosts file, which the pod resolver shim reads."""

    name = "cluster-dns"
    watched = (SERVICE, ENDPOINTS, POD)

    def render(self) -> str:
        return hosts_text(dns_records(self.client.list(SERVICE), self.client.list(ENDPOINTS), self.client.list(POD)))
