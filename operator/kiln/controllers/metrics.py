"""The operator's own Prometheus metrics, in a registry of their own that `kiln run --metrics-port` serves.

    kiln_reconciles_total{kind,result}          reconciles by kind and result: success, conflict or error
    kiln_reconcile_duration_seconds{kind}       how long reconciles took (histogram)
    kiln_rollouts_total{outcome}                finished rollouts by outcome (ModelDeployment status.history)
    kiln_analysis_measurements_total{metric_phase}  analysis measurements taken: Successful, Failed, Inconclusive, Error
    kiln_training_jobs{phase}                   TrainingJobs by phase, as the controller last saw them
    kiln_queued_gpu_demand                      GPUs the Queued TrainingJobs ask for, as last seen
    kiln_drift_score{namespace,deployment,feature}  each feature's drift statistic at the last check
    kiln_drift_detected{namespace,deployment}   1 while DriftDetected is True, else 0
    kiln_retrainings_total{trigger}             retrainings started, by trigger (`manual` for kiln retrain)
    kiln_retrainings_skipped_total{reason}      triggers held back: RetrainingInFlight, Cooldown, DailyCap

Rollouts and measurements are counted from the status a controller has written: what the new status
has that the old one had not (a history entry that gained an outcome, analysis counters that grew),
so a reconcile that writes nothing counts nothing and a finished rollout is counted once; so are
retrainings (a new entry in status.retraining.runs) and skips (a new status.retraining.skipped). The
training and drift gauges are the controllers' last-known values; a scrape does no I/O.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import prometheus_client
from prometheus_client import core, registry

from kiln.api import modeldeployment, trainingjob
from kiln.kube import client

SUCCESS, CONFLICT, ERROR = "success", "conflict", "error"
_COUNTERS = {
    "successful": modeldeployment.MeasurementPhase.SUCCESSFUL,
    "failed": modeldeployment.MeasurementPhase.FAILED,
    "inconclusive": modeldeployment.MeasurementPhase.INCONCLUSIVE,
    "errors": modeldeployment.MeasurementPhase.ERROR,
}
"""status.analysis[] counters, by the measurement phase they count."""


class _TrainingJobs(registry.Collector):
    """kiln_training_jobs and kiln_queued_gpu_demand from the last phase seen of each job."""

    def __init__(self) -> None:
        self._jobs: dict[tuple[str, str], tuple[str, int]] = {}
        self._guard = threading.Lock()

    def seen(self, namespace: str, name: str, phase: str | None, gpus: int = 0) -> None:
        with self._guard:
            if phase is None:
                self._jobs.pop((namespace, name), None)
            else:
                self._jobs[(namespace, name)] = (phase, gpus)

    def collect(self) -> Iterable[core.Metric]:
        with self._guard:
            jobs = list(self._jobs.values())
        phases = core.GaugeMetricFamily("kiln_training_jobs", "TrainingJobs by phase, as last seen.", labels=["phase"])
        for phase in trainingjob.TrainingJobPhase:
            phases.add_metric([phase.value], sum(1 for seen, _ in jobs if seen == phase.value))
        demand = core.GaugeMetricFamily(
            "kiln_queued_gpu_demand",
            "GPUs requested by the Queued TrainingJobs (workers x GPUs per worker).",
            value=sum(gpus for phase, gpus in jobs if phase == trainingjob.TrainingJobPhase.QUEUED.value),
        )
        return [phases, demand]

    def describe(self) -> Iterable[core.Metric]:
        return self.collect()


class _Drift(registry.Collector):
    """kiln_drift_score and kiln_drift_detected from the last status seen of each deployment."""

    def __init__(self) -> None:
        self._deployments: dict[tuple[str, str], tuple[dict[str, float], bool]] = {}
        self._guard = threading.Lock()

    def seen(self, namespace: str, name: str, status: Mapping[str, Any] | None) -> None:
        drift = (status or {}).get("drift")
        with self._guard:
            if drift is None:
                self._deployments.pop((namespace, name), None)
                return
            scores = {str(feature["name"]): float(feature["score"]) for feature in drift.get("features") or []}
            detected = any(
                condition.get("type") == "DriftDetected" and condition.get("status") == "True"
                for condition in (status or {}).get("conditions") or []
            )
            self._deployments[(namespace, name)] = (scores, detected)

    def collect(self) -> Iterable[core.Metric]:
        with self._guard:
            deployments = dict(self._deployments)
        scores = core.GaugeMetricFamily(
            "kiln_drift_score",
            "Each feature's drift statistic against the stable version's baseline, at the last check.",
            labels=["namespace", "deployment", "feature"],
        )
        detected = core.GaugeMetricFamily(
            "kiln_drift_detected", "1 while the deployment's DriftDetected is True.", labels=["namespace", "deployment"]
        )
        for (namespace, name), (features, drifted) in sorted(deployments.items()):
            for feature, score in sorted(features.items()):
                scores.add_metric([namespace, name, feature], score)
            detected.add_metric([namespace, name], 1.0 if drifted else 0.0)
        return [scores, detected]

    def describe(self) -> Iterable[core.Metric]:
        return self.collect()


@dataclasses.dataclass
class Metrics:
    """One operator's metrics; the three controllers share one, and each test makes its own."""

    registry: prometheus_client.CollectorRegistry = dataclasses.field(
        default_factory=prometheus_client.CollectorRegistry
    )

    def __post_init__(self) -> None:
        self.reconciles = prometheus_client.Counter(
            "kiln_reconciles", "Reconciles by kind and result.", ["kind", "result"], registry=self.registry
        )
        self.reconcile_duration = prometheus_client.Histogram(
            "kiln_reconcile_duration_seconds", "How long reconciles took.", ["kind"], registry=self.registry
        )
        self.rollouts = prometheus_client.Counter(
            "kiln_rollouts", "Finished ModelDeployment rollouts by outcome.", ["outcome"], registry=self.registry
        )
        self.measurements = prometheus_client.Counter(
            "kiln_analysis_measurements",
            "Analysis measurements taken, by phase.",
            ["metric_phase"],
            registry=self.registry,
        )
        for outcome in modeldeployment.RolloutOutcome:
            self.rollouts.labels(outcome=outcome.value)
        for phase in modeldeployment.MeasurementPhase:
            self.measurements.labels(metric_phase=phase.value)
        self.training_jobs = _TrainingJobs()
        self.registry.register(self.training_jobs)
        self.retrainings = prometheus_client.Counter(
            "kiln_retrainings", "Retrainings started, by trigger.", ["trigger"], registry=self.registry
        )
        self.retrainings_skipped = prometheus_client.Counter(
            "kiln_retrainings_skipped",
            "Retraining triggers that fired but were held back, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.drift = _Drift()
        self.registry.register(self.drift)

    @contextlib.contextmanager
    def reconciling(self, kind: str) -> Iterator[None]:
        """Time one reconcile of `kind` and count how it ended; what it raises is raised on."""
        result, started = ERROR, time.perf_counter()
        try:
            yield
            result = SUCCESS
        except client.ConflictError:
            result = CONFLICT
            raise
        finally:
            self.reconcile_duration.labels(kind=kind).observe(time.perf_counter() - started)
            self.reconciles.labels(kind=kind, result=result).inc()

    def deployment_status_written(self, old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> None:
        """A ModelDeployment's status went from `old` to `new` (wire form): count what finished meanwhile."""
        old, new = old or {}, new or {}
        for outcome in finished_rollouts(old.get("history") or [], new.get("history") or []):
            self.rollouts.labels(outcome=outcome).inc()
        for phase, count in new_measurements(old.get("analysis") or [], new.get("analysis") or []).items():
            self.measurements.labels(metric_phase=phase).inc(count)

    def monitoring_status_written(self, old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> None:
        """Monitoring wrote a ModelDeployment's status: count the retrainings started and the skips."""
        before, after = (old or {}).get("retraining") or {}, new.get("retraining") or {}
        known = {(run.get("trainingJob"), run.get("time")) for run in before.get("runs") or []}
        for run in after.get("runs") or []:
            if (run.get("trainingJob"), run.get("time")) not in known:
                self.retrainings.labels(trigger=str(run.get("trigger"))).inc()
        skipped = after.get("skipped")
        if skipped and skipped != before.get("skipped"):
            self.retrainings_skipped.labels(reason=str(skipped.get("reason"))).inc()

    def drift_seen(self, namespace: str, name: str, status: Mapping[str, Any] | None) -> None:
        """The deployment's status as last written or read (wire form); None forgets a deleted deployment."""
        self.drift.seen(namespace, name, status)

    def training_job_seen(self, namespace: str, name: str, phase: str | None, gpus: int = 0) -> None:
        """The job's phase as last seen, and the GPUs it asks for; None forgets a deleted job."""
        self.training_jobs.seen(namespace, name, phase, gpus)

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        """Serve /metrics on a daemon thread."""
        prometheus_client.start_http_server(port, addr=address, registry=self.registry)


def _rollout_key(record: Mapping[str, Any]) -> tuple[str, str]:
    return str(record.get("version")), str(record.get("startTime"))


def finished_rollouts(old: Iterable[Mapping[str, Any]], new: Iterable[Mapping[str, Any]]) -> list[str]:
    """The outcomes of rollouts finished in `new` history that were not finished in `old`."""
    done = {_rollout_key(record) for record in old if record.get("outcome")}
    return [str(record["outcome"]) for record in new if record.get("outcome") and _rollout_key(record) not in done]


def _analysis_key(result: Mapping[str, Any]) -> tuple[str, str, str]:
    return str(result.get("metric")), str(result.get("step")), str(result.get("started"))


def new_measurements(old: Iterable[Mapping[str, Any]], new: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Measurements by phase that `new` analysis counters hold beyond `old`'s (an analysis begun anew counts whole)."""
    before = {_analysis_key(result): result for result in old}
    counted: dict[str, int] = {}
    for result in new:
        previous = before.get(_analysis_key(result)) or {}
        for field, phase in _COUNTERS.items():
            grown = int(result.get(field) or 0) - int(previous.get(field) or 0)
            if grown > 0:
                counted[phase.value] = counted.get(phase.value, 0) + grown
    return counted
