"""The dev cluster's kube-proxy: a connection to a ClusterIP reaches the Service that holds the
address now, whichever pass comes first when the Service that had it goes and a new one takes it
(a freed ClusterIP is handed out again), and a deleted Service's listener closes."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from kiln.devcluster import network, registry, store

CLUSTER_IP = "127.96.250.7"
NAMESPACE = "team-a"


def free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


def service(name: str, port: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"clusterIP": CLUSTER_IP, "ports": [{"port": port}]},
    }


@pytest.mark.parametrize("passes", [["old", "new"], ["new", "old"]], ids=["old-first", "new-first"])
async def test_a_cluster_ip_handed_to_a_new_service_reaches_the_new_service(passes: list[str]) -> None:
    cluster = registry.Registry(store.Store(None))
    cluster.create(cluster.types.get("", "v1", "namespaces"), "", {"metadata": {"name": NAMESPACE}})
    services = cluster.types.get("", "v1", "services")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"the new service\n")
        await writer.drain()
        writer.close()

    backend = await asyncio.start_server(answer, "127.0.0.1", 0)
    backend_port = backend.sockets[0].getsockname()[1]
    port = free_port(CLUSTER_IP)
    proxy = network.ServiceProxy(cluster)
    try:
        cluster.create(services, NAMESPACE, service("old", port))
        await proxy.reconcile((NAMESPACE, "old"))
        cluster.delete(services, NAMESPACE, "old", {})
        cluster.create(services, NAMESPACE, service("new", port))
        endpoints = {
            "metadata": {"name": "new", "namespace": NAMESPACE},
            "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": backend_port}]}],
        }
        cluster.create(cluster.types.get("", "v1", "endpoints"), NAMESPACE, endpoints)
        for name in passes:  # the old Service gone, the new one holding its address
            await proxy.reconcile((NAMESPACE, name))

        reader, writer = await asyncio.open_connection(CLUSTER_IP, port)
        received = await asyncio.wait_for(reader.read(), 10)
        writer.close()

        assert received == b"the new service\n"
    finally:
        await proxy.close()
        backend.close()
        await backend.wait_closed()


async def test_a_deleted_service_s_listener_closes() -> None:
    cluster = registry.Registry(store.Store(None))
    cluster.create(cluster.types.get("", "v1", "namespaces"), "", {"metadata": {"name": NAMESPACE}})
    services = cluster.types.get("", "v1", "services")
    port = free_port(CLUSTER_IP)
    proxy = network.ServiceProxy(cluster)
    try:
        cluster.create(services, NAMESPACE, service("gone", port))
        await proxy.reconcile((NAMESPACE, "gone"))
        _, writer = await asyncio.open_connection(CLUSTER_IP, port)  # listening
        writer.close()
        cluster.delete(services, NAMESPACE, "gone", {})
        await proxy.reconcile((NAMESPACE, "gone"))

        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(CLUSTER_IP, port)
    finally:
        await proxy.close()
