"""kiln-server's Prometheus metrics, which rollout analysis and drift detection query.

- `kiln_server_requests_total{model,version,code}`: inference requests by HTTP status.
- `kiln_server_request_duration_seconds{model,version}`: inference latency, buckets from 50µs to 10s.
- `kiln_server_requests_in_flight`: inference requests being answered now.
- `kiln_server_model_ready{model,version}`: 1 once the version has loaded, 0 before or on failure.
- `kiln_server_feature_values{model,version,feature}`: a histogram of each input feature on the
  edges of the ModelVersion baseline's bins (`le` = each edge), for comparison with training data.
- `kiln_server_predictions_total{model,version,class}`: predicted classes.
- `kiln_server_feedback_requests_total{model,version,outcome}`: posted ground truth by outcome
  (`joined`, `late`, `duplicate`, `unknown`, `invalid`; see `feedback`).
- `kiln_server_feedback_predictions_total{model,version,outcome}`: a classifier's labelled
  predictions, `correct` or `incorrect`; live accuracy over a window is
  `increase(...{outcome="correct"}[w]) / increase(...[w])`.
- `kiln_server_feedback_absolute_error{model,version}`: a regressor's |prediction - truth| per
  labelled row; `rate(_sum) / rate(_count)` is the live mean absolute error.
- `kiln_server_feedback_remembered_predictions`: rows held for a later truth.

Requests that name no served model are counted with empty model and version labels, so a client
cannot grow the label space. The feature and class series are kept by a custom collector that
only queues each request's arrays; it bins them in bulk when scraped (or when the queue grows
long), which keeps a few microseconds of numpy per feature off every request.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import numpy as np
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from kiln.api import modelversion
from kiln.runtime import http_metrics

ABSOLUTE_ERROR_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0,
)  # fmt: skip
"""A regressor's scale is unknown here; three decades either side of 1 cover most, and the mean
comes from _sum and _count whatever the buckets."""

FOLD_ROWS: Final = 8192
"""Queued rows beyond which a model's observations are binned at once rather than at the scrape."""


def _recorder(metrics: ServerMetrics, model: str, version: str) -> http_metrics.RequestRecorder:
    return http_metrics.RequestRecorder(metrics, model, version, (200, 500))


class Observations:
    """The inputs and predictions of one model version, queued until the next scrape."""

    def __init__(
        self,
        model: str,
        version: str,
        baseline: modelversion.Baseline | None,
        feature_names: list[str],
    ) -> None:
        self.labels = (model, version)
        self.features = _binned_features(baseline, feature_names)
        self.edges = [edges for _, _, edges in self.features]
        self.bin_counts = [np.zeros(len(edges) + 1, dtype=np.int64) for edges in self.edges]
        self.sums = np.zeros(len(self.features))
        self.class_counts: dict[str, int] | None = None
        self._inputs: list[np.ndarray[Any, Any]] = []
        self._predictions: list[np.ndarray[Any, Any]] = []
        self._queued_rows = 0

    def track_classes(self, classes: np.ndarray[Any, Any]) -> None:
        self.class_counts = {str(label): 0 for label in classes.tolist()}

    def observe(self, inputs: np.ndarray[Any, Any], predictions: np.ndarray[Any, Any] | None) -> None:
        if self.features:
            self._inputs.append(inputs)
        if predictions is not None and self.class_counts is not None:
            self._predictions.append(predictions)
        self._queued_rows += len(inputs)
        if self._queued_rows > FOLD_ROWS:
            self.fold()

    def fold(self) -> None:
        """Bin everything queued."""
        self._queued_rows = 0
        if self._inputs:
            matrix = np.concatenate(self._inputs)
            self._inputs.clear()
            for position, (_, column, edges) in enumerate(self.features):
                values = matrix[:, column]
                # side="left" puts a value equal to an edge in that edge's bucket, as `le` means.
                self.bin_counts[position] += np.bincount(
                    np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1
                )
                self.sums[position] += float(values.sum())
        if self._predictions and self.class_counts is not None:
            labels, counts = np.unique(np.concatenate(self._predictions), return_counts=True)
            self._predictions.clear()
            for label, count in zip(labels.tolist(), counts.tolist(), strict=True):
                key = str(label)
                self.class_counts[key] = self.class_counts.get(key, 0) + count


def _binned_features(
    baseline: modelversion.Baseline | None, feature_names: list[str]
) -> list[tuple[str, int, np.ndarray[Any, np.dtype[np.float64]]]]:
    """(name, column, edges) of each baseline feature the input columns can be matched to: by the
    signature's feature names when it has them, else by position."""
    if baseline is None:
        return []
    features = []
    for position, feature in enumerate(baseline.features):
        column = feature_names.index(feature.name) if feature.name in feature_names else None
        if column is None and not feature_names:
            column = position
        if column is not None:
            features.append((feature.name, column, np.asarray(feature.bins, dtype=np.float64)))
    return features


class ObservationCollector:
    """Exposes every model version's Observations as Prometheus families."""

    def __init__(self) -> None:
        self.observations: list[Observations] = []

    def collect(self) -> Iterator[Metric]:
        features = HistogramMetricFamily(
            "kiln_server_feature_values",
            "Input feature values on the edges of the ModelVersion baseline's bins.",
            labels=["model", "version", "feature"],
        )
        predictions = CounterMetricFamily(
            "kiln_server_predictions", "Predictions by class.", labels=["model", "version", "class"]
        )
        for observed in self.observations:
            observed.fold()
            for position, (name, _, edges) in enumerate(observed.features):
                cumulative = np.cumsum(observed.bin_counts[position]).tolist()
                buckets = [(repr(edge), count) for edge, count in zip(edges.tolist(), cumulative, strict=False)]
                buckets.append(("+Inf", cumulative[-1]))
                features.add_metric([*observed.labels, name], buckets, float(observed.sums[position]))
            for label, count in (observed.class_counts or {}).items():
                predictions.add_metric([*observed.labels, label], count)
        yield features
        yield predictions


class ServerMetrics(http_metrics.RequestMetrics):
    """The server's registry and its metrics."""

    def __init__(self) -> None:
        super().__init__(
            "kiln_server",
            "model",
            "Inference requests by model, version and HTTP status code.",
            "Inference request latency, from the request's arrival at the handler to its response.",
        )
        self.in_flight = Gauge(
            "kiln_server_requests_in_flight", "Inference requests being answered.", registry=self.registry
        )
        self.model_ready = Gauge(
            "kiln_server_model_ready",
            "1 when the model version has loaded and serves, else 0.",
            ["model", "version"],
            registry=self.registry,
        )
        self.observed = ObservationCollector()
        self.registry.register(self.observed)
        self.unknown = _recorder(self, "", "")
        self.feedback_requests = Counter(
            "kiln_server_feedback_requests",
            "Ground-truth posts by outcome: joined, late, duplicate, unknown or invalid.",
            ["model", "version", "outcome"],
            registry=self.registry,
        )
        self.feedback_predictions = Counter(
            "kiln_server_feedback_predictions",
            "A classifier's predictions judged against posted ground truth: correct or incorrect.",
            ["model", "version", "outcome"],
            registry=self.registry,
        )
        self.feedback_absolute_error = Histogram(
            "kiln_server_feedback_absolute_error",
            "A regressor's absolute error against posted ground truth, per labelled row.",
            ["model", "version"],
            buckets=ABSOLUTE_ERROR_BUCKETS,
            registry=self.registry,
        )
        self.remembered = Gauge(
            "kiln_server_feedback_remembered_predictions",
            "Predicted rows held for a later ground truth.",
            registry=self.registry,
        )

    def track_feedback(self, model: str, version: str, classifier: bool) -> None:
        """Start the version's judged series at 0, so an accuracy query reads 0 rather than nothing."""
        if classifier:
            for outcome in ("correct", "incorrect"):
                self.feedback_predictions.labels(model, version, outcome)
        else:
            self.feedback_absolute_error.labels(model, version)

    def for_version(self, version: modelversion.ModelVersion) -> tuple[http_metrics.RequestRecorder, Observations]:
        spec = version.spec
        self.model_ready.labels(spec.model_name, spec.version).set(0)
        names = spec.signature.feature_names if spec.signature else []
        observed = Observations(spec.model_name, spec.version, spec.baseline, names)
        self.observed.observations.append(observed)
        return _recorder(self, spec.model_name, spec.version), observed
