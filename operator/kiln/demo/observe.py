"""What the demo shows, read from the cluster and Prometheus once a second: the TrainingJobs,
ModelVersions and the ModelDeployment as the operator writes them, and the request and error
rate per version as Prometheus scrapes kiln-server."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import httpx
import kubernetes

from kiln.api import base
from kiln.demo import manifests

GROUP, VERSION = base.GROUP, base.API_VERSION.split("/")[1]
_REQUESTS = f'kiln_server_requests_total{{namespace="{manifests.NAMESPACE}",model="{manifests.MODEL}"}}'
RATES = f"sum by (version, code) (rate({_REQUESTS}[10s]))"
TOTALS = f"sum by (version, code) (max_over_time({_REQUESTS}[1h]))"
"""Every answer each version gave: each pod's counter at its highest (no pod restarts in the demo)."""

Object = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Rates:
    """Requests (per second, or in all) and 5xx answers of one version."""

    requests: float
    errors: float

    @property
    def error_share(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclasses.dataclass
class Snapshot:
    jobs: list[Object] = dataclasses.field(default_factory=list)
    versions: list[Object] = dataclasses.field(default_factory=list)
    deployment: Object | None = None
    rates: dict[str, Rates] = dataclasses.field(default_factory=dict)

    @property
    def status(self) -> Object:
        return dict((self.deployment or {}).get("status") or {})

    def job(self, name: str) -> Object:
        return next((job for job in self.jobs if job["metadata"]["name"] == name), {})

    def version(self, name: str) -> Object:
        return next((mv for mv in self.versions if mv["metadata"]["name"] == name), {})

    def condition(self, condition_type: str) -> str | None:
        return next((c["status"] for c in self.status.get("conditions", []) if c["type"] == condition_type), None)

    def rollout_of(self, version: str) -> Object:
        return next((r for r in reversed(self.status.get("history") or []) if r["version"] == version), {})


def phase(obj: Mapping[str, Any]) -> str:
    return str((obj.get("status") or {}).get("phase") or "-")


class Observer:
    def __init__(self, kubeconfig: str, prometheus_url: str) -> None:
        client = kubernetes.config.new_client_from_config(config_file=kubeconfig)
        self.api = kubernetes.client.CustomObjectsApi(client)
        self.prometheus_url = prometheus_url
        self.http = httpx.Client(timeout=2)

    def _list(self, plural: str) -> list[Object]:
        found = self.api.list_namespaced_custom_object(GROUP, VERSION, manifests.NAMESPACE, plural)
        return sorted(found["items"], key=lambda obj: obj["metadata"]["creationTimestamp"])

    def _deployment(self) -> Object | None:
        try:
            found: Object = self.api.get_namespaced_custom_object(
                GROUP, VERSION, manifests.NAMESPACE, "modeldeployments", manifests.DEPLOYMENT
            )
        except kubernetes.client.ApiException as error:
            if error.status == 404:
                return None
            raise
        return found

    def _by_version(self, query: str) -> dict[str, Rates]:
        """Requests and 5xx answers per version, as the query sums them by version and code."""
        try:
            answer = self.http.get(f"{self.prometheus_url}/api/v1/query", params={"query": query}).json()
        except (httpx.HTTPError, ValueError):
            return {}
        requests: dict[str, float] = {}
        errors: dict[str, float] = {}
        for series in answer.get("data", {}).get("result", []):
            version, value = series["metric"].get("version", "-"), float(series["value"][1])
            requests[version] = requests.get(version, 0.0) + value
            if series["metric"].get("code", "").startswith("5"):
                errors[version] = errors.get(version, 0.0) + value
        return {version: Rates(rate, errors.get(version, 0.0)) for version, rate in requests.items() if rate > 0}

    def totals(self) -> dict[str, Rates]:
        """Every request each version answered in the demo, and its 5xx answers."""
        return self._by_version(TOTALS)

    def snapshot(self) -> Snapshot:
        return Snapshot(
            self._list("trainingjobs"), self._list("modelversions"), self._deployment(), self._by_version(RATES)
        )

    def close(self) -> None:
        self.http.close()
