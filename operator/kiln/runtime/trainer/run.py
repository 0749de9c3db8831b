"""One training run, step by step: load, split, fit (or resume), measure, save, register, report.

Each step logs one line to stdout; the caller turns a TrainerError into the last line of the log.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from kiln.api import modelversion, trainingjob
from kiln.runtime import progress
from kiln.runtime.trainer import (
    artifact,
    baseline,
    checkpoint,
    datasets,
    estimators,
    evaluation,
    expectations,
    registration,
    result,
    settings,
)

Say = Callable[[str], None]
MAX_FEATURE_NAMES = 4096
STEPS = 4
"""The progress rank 0 reports: the dataset loaded, the estimator fitted, measured, the run done."""


@dataclass(frozen=True)
class Fitted:
    model: Any
    artifact: bytes


@dataclass
class Unsaved:
    """A fit that finished but is not checkpointed yet, for a SIGTERM to save before the pod goes."""

    config: settings.Settings | None = None
    fit_key: str = ""
    model: Any = None

    def fitted(self, config: settings.Settings, fit_key: str, model: Any) -> None:
        self.config, self.fit_key, self.model = config, fit_key, model

    def saved(self) -> None:
        self.model = None

    def save(self, say: Say) -> None:
        """Checkpoint the fit that waits, if one does and there is a checkpoint directory."""
        config, model = self.config, self.model
        if config is None or model is None:
            say("nothing to checkpoint: no fit finished since the last checkpoint")
            return
        if config.checkpoint_dir is None:
            say("the fit is lost: the job has no spec.checkpoint")
            return
        checkpoint.save(config.checkpoint_dir, self.fit_key, artifact.dumps(model))
        uri = config.checkpoint_uri
        failed = checkpoint.push(config.checkpoint_dir, uri, config.artifact_settings) if uri else None
        self.saved()
        where = uri or config.checkpoint_dir
        say(f"checkpointed the fitted estimator in {where}" if failed is None else f"not checkpointed: {failed}")


def train(
    config: settings.Settings,
    api: Callable[[], registration.ModelVersions],
    say: Say,
    reports: progress.Reporter | None = None,
    unsaved: Unsaved | None = None,
) -> trainingjob.TrainingResult:
    """Run the whole job; the TrainingResult written to the result file (when one is set). Progress
    goes to `reports`, one step per stage, the last one with the metrics; a fit not yet
    checkpointed waits in `unsaved` meanwhile."""
    spec = config.sklearn
    reports = reports or progress.Reporter(lambda report: None)
    reports.report(0, STEPS)
    if config.result_file is not None:
        result.clear(config.result_file)
    source = f"{datasets.BUILTIN_SCHEME}{spec.dataset.builtin}" if spec.dataset.builtin else spec.dataset.uri
    say(f"loading dataset {source}")
    data = datasets.load(spec, config.dataset_path, expectations.checker(spec.dataset, config.namespace, api))
    rows, columns = data.features.shape
    say(f"loaded {rows} rows x {columns} features (sha256 {data.sha256})")
    reports.report(1, STEPS)
    estimator = estimators.build(spec)
    parts = evaluation.split(
        data.features, data.target, spec.test_size, spec.random_seed, stratify=estimator.is_classifier
    )
    held_out = f"held out {len(parts.test_target)} of {rows} rows"
    say(f"{held_out}{', stratified by class' if parts.stratified else ''}")
    version = framework_version(estimator.framework)
    fit_key = checkpoint.key(spec, data.sha256, version)
    fitted = fit_or_resume(config, estimator, parts, fit_key, say, unsaved=unsaved or Unsaved())
    reports.report(2, STEPS)
    metrics = evaluation.measure(fitted.model, estimator.is_classifier, parts)
    say("metrics: " + ", ".join(f"{name}={value:.4f}" for name, value in metrics.items()))
    reports.report(3, STEPS, metrics=metrics)
    described = signature(fitted.model, parts, data.feature_names)
    history = lineage(config, data, estimator)
    registered: tuple[str, modelversion.Artifact] | None = None
    if config.output is not None:
        assert config.artifact_uri is not None  # Settings checks it comes with the output
        spec_of_version = modelversion.ModelVersionSpec(
            model_name=config.output.model_name,
            version=config.output.version,
            artifact=modelversion.Artifact(
                uri=config.artifact_uri, sha256=artifact.sha256(fitted.artifact), size_bytes=len(fitted.artifact)
            ),
            framework=estimator.framework,
            framework_version=version,
            metrics=metrics,
            signature=described,
            baseline=baseline.compute(parts.train_features, data.feature_names),
            lineage=history,
            gates=config.output.gates,
            required_approvals=config.output.required_approvals,
        )
        registered = register(config, spec_of_version, fitted.artifact, api, say), spec_of_version.artifact
    outcome = trainingjob.TrainingResult(
        metrics=metrics,
        artifact=registered[1] if registered else None,
        framework=estimator.framework,
        framework_version=version,
        signature=described,
        lineage=history,
        model_version=registered[0] if registered else None,
    )
    written = report(config, outcome, say)
    reports.report(STEPS, STEPS, metrics=metrics, final=True)
    return written


def report(config: settings.Settings, outcome: trainingjob.TrainingResult, say: Say) -> trainingjob.TrainingResult:
    """Write the result file, made to fit the termination message; the result as written."""
    outcome, shed = result.fitted(outcome)
    if shed:
        say(f"the result leaves out {', '.join(shed)} to fit {trainingjob.RESULT_MESSAGE_LIMIT} bytes")
    if config.result_file is not None:
        written = result.write(config.result_file, outcome)
        say(f"wrote the result ({len(written)} bytes) to {config.result_file}")
    return outcome


def framework_version(framework: str) -> str:
    return str(getattr(importlib.import_module(framework), "__version__", "unknown"))


def fit_or_resume(
    config: settings.Settings,
    estimator: estimators.Estimator,
    parts: evaluation.Split,
    fit_key: str,
    say: Say,
    *,
    unsaved: Unsaved,
) -> Fitted:
    """The fitted model: from a checkpoint fitted for the same inputs, else fitted now (and
    checkpointed, when a checkpoint directory is set; `unsaved` holds it until then)."""
    where, uri = config.checkpoint_dir, config.checkpoint_uri
    if where is not None:
        pulled = checkpoint.pull(where, uri, config.artifact_settings) if uri else None
        found, why = checkpoint.load(where, fit_key) if pulled is None else (None, pulled)
        if found is not None:
            say(f"resumed from the checkpoint in {uri or where}: not fitting again")
            return Fitted(found.estimator, found.data)
        say(f"fitting from the start: {why}")
    estimators.fit(estimator, parts.train_features, parts.train_target)
    unsaved.fitted(config, fit_key, estimator.instance)
    data = artifact.dumps(estimator.instance)
    say(f"fitted {estimator.path} on {len(parts.train_target)} rows")
    if where is not None:
        checkpoint.save(where, fit_key, data)
        failed = checkpoint.push(where, uri, config.artifact_settings) if uri else None
        say(f"checkpointed the fitted estimator in {uri or where}" if failed is None else f"not checkpointed: {failed}")
        unsaved.saved()
    return Fitted(estimator.instance, data)


def _datatype(values: np.ndarray[Any, Any]) -> str:
    if values.dtype.kind == "b":
        return "BOOL"
    if values.dtype.kind in "iu":
        return "INT64"
    if values.dtype.kind == "f":
        return "FP64"
    return "BYTES"


def signature(model: Any, parts: evaluation.Split, names: list[str]) -> modelversion.Signature:
    """One FP64 input of all features; one `predict` output of the predictions' type."""
    predicted = np.asarray(model.predict(parts.test_features[:1]))
    return modelversion.Signature(
        inputs=[modelversion.TensorSpec(name="input-0", datatype="FP64", shape=[-1, len(names)])],
        outputs=[modelversion.TensorSpec(name="predict", datatype=_datatype(predicted), shape=[-1])],  # type: ignore[arg-type]
        feature_names=names if len(names) <= MAX_FEATURE_NAMES else [],
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def lineage(config: settings.Settings, data: datasets.Data, estimator: estimators.Estimator) -> modelversion.Lineage:
    """The job, the dataset as read, the code, and every setting of the fit, as strings."""
    spec = config.sklearn
    parameters = {
        "estimator": estimator.path,
        "testSize": _text(spec.test_size),
        "randomSeed": _text(spec.random_seed),
        **{f"params.{name}": _text(value) for name, value in sorted(estimator.params.items())},
    }
    return modelversion.Lineage(
        training_job=config.training_job,
        dataset=modelversion.DatasetRef(uri=data.uri, sha256=data.sha256),
        code=config.code,
        parameters=parameters,
    )


def register(
    config: settings.Settings,
    spec: modelversion.ModelVersionSpec,
    data: bytes,
    api: Callable[[], registration.ModelVersions],
    say: Say,
) -> str:
    """Write the artifact and create the ModelVersion; its name."""
    output = config.output
    assert output is not None
    artifact.save(spec.artifact, data, config.artifact_path, config.artifact_settings)
    saved = "uploaded" if config.artifact_path is None else "saved"
    say(f"{saved} {spec.artifact.uri} (sha256 {spec.artifact.sha256}, {len(data)} bytes)")
    version = registration.build(
        output,
        namespace=config.namespace or "",
        training_job=config.training_job or "",
        training_job_uid=config.training_job_uid or "",
        spec=spec,
    )
    created = registration.register(api(), version)
    name = version.metadata.name or ""
    if created:
        say(f"registered modelversion {config.namespace}/{name}")
    else:
        say(f"modelversion {config.namespace}/{name} was already registered with this artifact")
    return name
