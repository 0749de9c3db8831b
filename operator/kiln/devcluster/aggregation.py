"""The clusterrole-aggregation controller: a ClusterRole with an `aggregationRule` is kept holding
the rules of the ClusterRoles its selectors pick, so `kubectl get clusterrole view -o yaml` shows
what a CRD's `aggregate-to-view` role added. (The authorizer aggregates on its own as it decides,
so a decision never waits for this controller.)"""

from __future__ import annotations

from collections.abc import Iterable

from kiln.devcluster import authorization, controllers, store

CLUSTER_ROLE = "clusterroles.rbac.authorization.k8s.io"


class ClusterRoleAggregator(controllers.Controller):
    name = "clusterrole-aggregation-controller"
    debounce_seconds = 0.05

    def initial_keys(self) -> Iterable[controllers.Key]:
        return [("", "")]

    def keys_for(self, event: store.Event) -> Iterable[controllers.Key]:
        return [("", "")] if event.resource == CLUSTER_ROLE else ()

    async def reconcile(self, key: controllers.Key) -> float | None:
        current = self.client.list(CLUSTER_ROLE)
        for before, after in zip(current, authorization.aggregate(current), strict=True):
            if after.get("rules") != before.get("rules"):
                self.client.update(CLUSTER_ROLE, controllers.copied(after))
        return None
