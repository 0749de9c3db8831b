"""The volume binder: every PersistentVolumeClaim is provisioned at once as a local directory.

Each claim gets a PersistentVolume `pvc-<uid>` of the requested size backed
by `<data dir>/volumes/<namespace>/<claim>` (the directory the kubelet mounts),
and both are Bound, as a dynamic provisioner with Immediate binding does.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterable
from typing import Any

from kiln.devcluster import addons, controllers, registry, store, volumes
from kiln.devcluster.controllers import PV, PVC, Key

Object = dict[str, Any]


class VolumeBinder(controllers.Controller):
    name = "persistentvolume-binder-controller"

    def __init__(self, cluster: registry.Registry, volumes_root: pathlib.Path) -> None:
        super().__init__(cluster)
        self.volumes_root = volumes_root

    def initial_keys(self) -> Iterable[Key]:
        return self.keys_of(PVC)

    def keys_for(self, event: store.Event) -> Iterable[Key]:
        return [controllers.object_key(event)] if event.resource == PVC and event.type != store.DELETED else ()

    async def reconcile(self, key: Key) -> float | None:
        claim = self.client.get(PVC, *key)
        if claim is None or claim["metadata"].get("deletionTimestamp"):
            return None
        if (claim.get("status") or {}).get("phase") == "Bound":
            return None
        spec = claim.get("spec") or {}
        size = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
        modes = spec.get("accessModes") or ["ReadWriteOnce"]
        storage_class = spec.get("storageClassName") or addons.DEFAULT_STORAGE_CLASS
        volume_name = f"pvc-{claim['metadata']['uid']}"
        directory = volumes.claim_directory(self.volumes_root, *key)
        directory.mkdir(parents=True, exist_ok=True)
        if self.client.get(PV, "", volume_name) is None:
            volume = {
                "metadata": {
                    "name": volume_name,
                    "annotations": {"pv.kubernetes.io/provisioned-by": addons.STORAGE_CLASS["provisioner"]},
                },
                "spec": {
                    "capacity": {"storage": size},
                    "accessModes": modes,
                    "persistentVolumeReclaimPolicy": "Delete",
                    "storageClassName": storage_class,
                    "hostPath": {"path": str(directory), "type": "DirectoryOrCreate"},
                    "claimRef": {
                        "kind": "PersistentVolumeClaim",
                        "namespace": key[0],
                        "name": key[1],
                        "uid": claim["metadata"]["uid"],
                        "apiVersion": "v1",
                    },
                },
            }
            created = self.client.create(PV, "", volume)
            self.client.update_status(PV, created, {"phase": "Bound"})
        bound = self.client.update(
            PVC, {**claim, "spec": {**spec, "volumeName": volume_name, "storageClassName": storage_class}}
        )
        self.client.update_status(PVC, bound, {"phase": "Bound", "accessModes": modes, "capacity": {"storage": size}})
        self.client.event(bound, "Normal", "ProvisioningSucceeded", f"Successfully provisioned volume {volume_name}")
        return None
