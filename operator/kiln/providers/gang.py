"""The GangScheduler seam: who decides that a job's workers may start, all or nothing.

`builtin` admits a job when its whole gang fits the free capacity of the nodes it may use, in queue
order (`kiln.training.inventory`), so pods are only created for gangs that can all be placed. `volcano`
and `coscheduling` admit at once: Kiln emits a PodGroup with minMember and those schedulers bind
all of the group's pods or none. `kueue` admits at once too: the workers are created gated, labelled
as one Kueue pod group, and Kueue lifts the gates when its quota admits the whole group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from kiln.api import trainingjob
from kiln.training import admission, inventory


class GangScheduler(Protocol):
    needs_cluster: bool
    """Whether admit reads the cluster (the inventory of nodes, pods and the other jobs)."""

    def admit(self, gang: admission.Gang, queue: Callable[[], inventory.Inventory]) -> admission.Admission: ...


class Builtin:
    needs_cluster = True

    def admit(self, gang: admission.Gang, queue: Callable[[], inventory.Inventory]) -> admission.Admission:
        return queue().decide(gang)


class PodGroupScheduler:
    needs_cluster = False

    def __init__(self, name: str) -> None:
        self.name = name

    def admit(self, gang: admission.Gang, queue: Callable[[], inventory.Inventory]) -> admission.Admission:
        return admission.Admission(True, f"a PodGroup with minMember lets {self.name} bind the {gang.size} workers")


class Kueue:
    """Kueue admits the workers, created gated as one pod group, against its ClusterQueue's quota."""

    needs_cluster = False

    def admit(self, gang: admission.Gang, queue: Callable[[], inventory.Inventory]) -> admission.Admission:
        return admission.Admission(True, f"Kueue admits the pod group of {gang.size} gated workers from its queue")


SCHEDULERS: dict[trainingjob.GangScheduler, GangScheduler] = {
    trainingjob.GangScheduler.BUILTIN: Builtin(),
    trainingjob.GangScheduler.VOLCANO: PodGroupScheduler("volcano"),
    trainingjob.GangScheduler.COSCHEDULING: PodGroupScheduler("the coscheduling plugin"),
    trainingjob.GangScheduler.KUEUE: Kueue(),
}
