"""Kiln's informer (`kiln.kube.informer`) against the dev cluster: what was there is handed over as
listed, then each change as it comes, across watches the server ends."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from polling import eventually

from kiln.devcluster import cluster
from kiln.kube import client, informer


def config_map(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}, "data": data}


class CountingClient(client.Client):
    """Kiln's client, counting the watch requests made."""

    watches = 0

    def watch(self, resource: client.Resource, namespace: str | None, version: str, seconds: int) -> Iterator[Any]:
        self.watches += 1
        return super().watch(resource, namespace, version, seconds)


def test_an_informer_hands_over_what_was_listed_then_each_change_across_watches_the_server_ends(
    devcluster: cluster.DevCluster,
) -> None:
    connected = client.connect(kubeconfig=str(devcluster.kubeconfig_path))
    kube = CountingClient(connected._api, connected.namespace)
    kube.create(client.CONFIG_MAPS, config_map("before", step="0"))
    seen: list[tuple[str | None, str, Mapping[str, Any]]] = []
    config_maps = informer.Informer(
        kube, client.CONFIG_MAPS, "default", lambda kind, body: seen.append((kind, body["metadata"]["name"], body)), 1
    )
    config_maps.start()
    try:
        eventually(lambda: (None, "before") in [(kind, name) for kind, name, _ in seen], "the listed ConfigMap")
        kube.create(client.CONFIG_MAPS, config_map("after", step="1"))
        kube.patch(client.CONFIG_MAPS, "default", "before", {"data": {"step": "2"}})
        kube.delete(client.CONFIG_MAPS, "default", "after")
        changes = [("ADDED", "after"), ("MODIFIED", "before"), ("DELETED", "after")]
        eventually(lambda: [(kind, name) for kind, name, _ in seen if kind][-3:] == changes, "each change in order")
        assert seen[-2][2]["data"] == {"step": "2"}

        before, watches = len(seen), kube.watches
        eventually(lambda: kube.watches > watches, "the server to end a watch (after a second) and a new one")
        kube.patch(client.CONFIG_MAPS, "default", "before", {"data": {"step": "3"}})
        eventually(lambda: len(seen) > before and seen[-1][2].get("data") == {"step": "3"}, "the change watched on")
        assert [kind for kind, _, _ in seen].count(None) == 1  # resumed, never listed again
    finally:
        config_maps.stop()
