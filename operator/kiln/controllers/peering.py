"""Whether this replica is the one kopf lets act, for the work kopf cannot pause itself.

With `kiln run --peering`, kopf pauses an operator's watches and handlers while another live peer in
its peering objects has a priority higher than, or equal to, its own. The TrainingJob controller's
wake-ups run in a thread of their own, which kopf does not know of: they ask here before each
reconcile. The answer is read from the same peering objects by the same rule, at most once per
`POLL_SECONDS`, so a replica that kopf pauses stops reconciling jobs within about that long.
"""

from __future__ import annotations

import dataclasses
import datetime
import getpass
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kiln.controllers import shared
from kiln.kube import client

CLUSTER_PEERINGS = client.Resource("kopf.dev", "v1", "clusterkopfpeerings", "ClusterKopfPeering", False)
NAMESPACE_PEERINGS = client.Resource("kopf.dev", "v1", "kopfpeerings", "KopfPeering")
PEERING_NAME = "default"
"""kopf's peering object (its `settings.peering.name`, which `kiln run` leaves as it is)."""
POLL_SECONDS = 1.0
_KOPF_DEFAULT_LIFETIME_SECONDS = 60

log = logging.getLogger(__name__)


def own_identity(environ: Mapping[str, str] = os.environ) -> str:
    """This replica's name among its peers: its pod's name where the chart sets POD_ID (as kopf
    itself would name it), else who runs it where, when, and a random tail."""
    pod = environ.get("POD_ID")
    if pod:
        return pod
    started = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d%H%M%S")
    return f"{getpass.getuser()}@{socket.gethostname()}/{started}/{secrets.token_hex(2)}"


def acts(peers: Mapping[str, Any], identity: str, priority: int, now: datetime.datetime) -> bool:
    """kopf's rule over one peering object's status (identity → priority, lifetime, lastseen): act
    unless another live peer's priority is at least this one's (equal priorities pause every peer).
    A peer is live until `lifetime` seconds after it was last seen; one never seen counts as seen now."""
    for peer, seen in peers.items():
        if peer == identity or not isinstance(seen, Mapping):
            continue
        try:
            lifetime = datetime.timedelta(seconds=int(seen.get("lifetime", _KOPF_DEFAULT_LIFETIME_SECONDS)))
            lastseen = seen.get("lastseen")
            if lastseen is not None:
                at = datetime.datetime.fromisoformat(str(lastseen))
                at = at if at.tzinfo else at.replace(tzinfo=datetime.UTC)  # kopf reads a bare time as UTC
                if at + lifetime <= now:
                    continue  # dead
            if int(seen.get("priority", 0)) >= priority:
                return False
        except (TypeError, ValueError):
            continue  # an entry kopf did not write; kopf would not read it either
    return True


def always() -> bool:
    """A standalone operator always acts."""
    return True


@dataclasses.dataclass
class Replica:
    """One of the operator's replicas under kopf peering: cluster-wide (one ClusterKopfPeering) or
    in the namespaces it watches (a KopfPeering in each, all of which must let it act, as kopf pauses
    for a conflict in any)."""

    kube: client.Api
    identity: str
    priority: int
    namespaces: Sequence[str] = ()
    clock: shared.Clock = shared.utcnow
    monotonic: Callable[[], float] = time.monotonic
    _acting: bool = True
    _checked: float | None = None

    def acting(self) -> bool:
        """Whether kopf lets this replica act, as last read (at most POLL_SECONDS ago). Without a
        peering object kopf runs standalone, and so does this; an unreadable one keeps the last answer."""
        now = self.monotonic()
        if self._checked is not None and now - self._checked < POLL_SECONDS:
            return self._acting
        self._checked = now
        try:
            if self.namespaces:
                peerings = [self.kube.get(NAMESPACE_PEERINGS, namespace, PEERING_NAME) for namespace in self.namespaces]
            else:
                peerings = [self.kube.get(CLUSTER_PEERINGS, None, PEERING_NAME)]
        except client.ApiError as error:
            log.warning("reading kopf's peering: %s; acting as before (%s)", error, self._acting)
            return self._acting
        seen_at = self.clock()
        self._acting = all(
            acts((peering or {}).get("status") or {}, self.identity, self.priority, seen_at) for peering in peerings
        )
        return self._acting
