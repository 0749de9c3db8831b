"""A steady iris deployment with drift monitoring and retraining, and live answers made from samples
the way kiln-server and Prometheus would give them."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

import numpy as np

from kiln.api import modeldeployment, modelversion
from kiln.monitoring import drift, plan
from kiln.monitoring.measure import Answer

NAME, NAMESPACE, MODEL = "iris", "ml", "iris"
T0 = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)
FEATURES = ("sepal_length", "petal_length")
EDGES = np.linspace(-3.0, 3.0, 11)
TRAINING = np.random.default_rng(1).normal(0, 1, (5000, 2))
TEMPLATE = {
    "sklearn": {"estimator": "sklearn.linear_model.LogisticRegression", "dataset": {"builtin": "iris"}},
    "output": {"modelName": MODEL, "version": "0.0.0"},
}
Object = dict[str, Any]


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def baseline() -> modelversion.Baseline:
    return modelversion.Baseline(
        features=[
            modelversion.FeatureBaseline(
                name=name, bins=EDGES.tolist(), counts=np.histogram(TRAINING[:, i], EDGES)[0].tolist()
            )
            for i, name in enumerate(FEATURES)
        ],
        sample_size=len(TRAINING),
    )


def live(rows: np.ndarray) -> dict[str, Answer]:
    """Each feature's cumulative buckets (kiln-server's binning), answered in reverse order."""
    answers = {}
    for i, name in enumerate(FEATURES):
        buckets = np.bincount(np.searchsorted(EDGES, rows[:, i], side="left"), minlength=len(EDGES) + 1)
        answers[drift.FEATURE_KEY + name] = Answer(value=np.cumsum(buckets).astype(float).tolist()[::-1])
    return answers


def traffic(shift: float = 0.0, rows: int = 800, seed: int = 2) -> dict[str, Answer]:
    return live(np.random.default_rng(seed).normal(shift, 1, (rows, 2)))


def spec(
    *, drift_spec: Object | None = None, triggers: list[Object] | None = None, **retraining: Any
) -> modeldeployment.ModelDeploymentSpec:
    monitoring: Object = {"drift": {"interval": "1m", "window": "2m", "minSamples": 500, **(drift_spec or {})}}
    if triggers is not None:
        monitoring["retraining"] = {"template": TEMPLATE, "triggers": triggers, **retraining}
    return modeldeployment.ModelDeploymentSpec.model_validate(
        {"model": MODEL, "version": "1.0.0", "monitoring": monitoring}
    )


def steady_status() -> modeldeployment.ModelDeploymentStatus:
    return modeldeployment.ModelDeploymentStatus(phase="Healthy", stable_version="1.0.0")


@dataclasses.dataclass
class World:
    """One deployment's monitoring, planned again and again with the status each plan left."""

    spec: modeldeployment.ModelDeploymentSpec
    status: modeldeployment.ModelDeploymentStatus = dataclasses.field(default_factory=steady_status)
    versions: tuple[str, ...] = ("1.0.0",)
    jobs: tuple[plan.Job, ...] = ()
    annotations: dict[str, str] = dataclasses.field(default_factory=dict)
    with_baseline: bool = True

    def observed(self, answers: Mapping[str, Answer] | None = None) -> plan.Observed:
        return plan.Observed(
            namespace=NAMESPACE,
            name=NAME,
            generation=1,
            annotations=self.annotations,
            spec=self.spec,
            status=self.status,
            baseline=baseline() if self.with_baseline else None,
            versions=self.versions,
            jobs=self.jobs,
            default_prometheus="http://prometheus:9090",
            answers=answers or {},
        )

    def step(self, seconds: float, answers: Mapping[str, Answer] | None = None) -> plan.Plan:
        """Plan at T0 + seconds, answering what it asks from `answers`; keep the status it leaves."""
        asked = plan.plan(self.observed(), at(seconds))
        if asked.measure:
            given = answers or {}
            asked = plan.plan(self.observed({q.key: given.get(q.key, Answer()) for q in asked.measure}), at(seconds))
        assert not asked.measure
        self.status = asked.status
        for body in asked.create:
            self.jobs = (*self.jobs, plan.Job(body["metadata"]["name"], body["spec"]["output"]["version"], False))
        return asked

    def finish_jobs(self) -> None:
        self.jobs = tuple(dataclasses.replace(job, finished=True) for job in self.jobs)

    def condition(self, kind: str = "DriftDetected") -> modeldeployment.base.Condition | None:
        return next((c for c in self.status.conditions if c.type == kind), None)
