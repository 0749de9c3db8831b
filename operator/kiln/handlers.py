"""kopf wiring: the only module that imports kopf.

Handlers stay a few lines each: gather what they observe, call a pure plan from
a domain package, apply it through `kiln.kube`, record status. The controllers
of the three kinds register here as they arrive.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import kopf
import pydantic

from kiln import artifacts
from kiln.api import base, resources
from kiln.controllers import modelversion, trainingjob
from kiln.kube import client
from kiln.training import plan as training_plan
from kiln.training import workers

FINALIZER = f"{base.GROUP}/finalizer"
RETRY_DELAY_SECONDS = 5


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Keep kopf's bookkeeping in kiln.dev annotations: the CRD schemas are structural,
    so the API server would prune kopf's default `status.kopf` field."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=base.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=base.GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO


@kopf.on.startup()
def connect(memo: kopf.Memo, **_: Any) -> None:
    """One API client and the artifact stores' settings, shared by every reconcile."""
    kube = client.connect()
    memo.model_versions = modelversion.Controller(kube, artifacts.Settings.from_environment())
    memo.training_jobs = trainingjob.Controller(kube, training_settings())


def training_settings(environ: Mapping[str, str] = os.environ) -> training_plan.Settings:
    """KILN_TRAINER_IMAGE and the gang restart back-off, KILN_TRAINING_BACKOFF_SECONDS (doubling up to
    KILN_TRAINING_MAX_BACKOFF_SECONDS)."""
    defaults = training_plan.Settings()
    return training_plan.Settings(
        trainer_image=environ.get("KILN_TRAINER_IMAGE", defaults.trainer_image),
        backoff_seconds=float(environ.get("KILN_TRAINING_BACKOFF_SECONDS", defaults.backoff_seconds)),
        max_backoff_seconds=float(environ.get("KILN_TRAINING_MAX_BACKOFF_SECONDS", defaults.max_backoff_seconds)),
    )


@contextlib.contextmanager
def _as_kopf_errors() -> Iterator[None]:
    """The one place exceptions become kopf's: an API failure is retried, a bad object is not."""
    try:
        yield
    except client.ApiError as error:
        raise kopf.TemporaryError(
            str(error), delay=1 if isinstance(error, client.ConflictError) else RETRY_DELAY_SECONDS
        ) from error
    except pydantic.ValidationError as error:
        raise kopf.PermanentError(f"the object does not parse: {error}") from error


_MODEL_VERSIONS = (base.GROUP, base.VERSION, resources.MODEL_VERSION.plural)


@kopf.on.resume(*_MODEL_VERSIONS, id="model-version-resume")
@kopf.on.create(*_MODEL_VERSIONS, id="model-version-create")
@kopf.on.update(*_MODEL_VERSIONS, id="model-version-update")
def reconcile_model_version(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    """Validate, count approvals and move the stage of one ModelVersion (kiln.controllers.modelversion)."""
    with _as_kopf_errors():
        memo.model_versions.reconcile(namespace or "default", name)


_TRAINING_JOBS = (base.GROUP, base.VERSION, resources.TRAINING_JOB.plural)
TRAINING_TICK_SECONDS = 2.0


@kopf.on.resume(*_TRAINING_JOBS, id="training-job-resume")
@kopf.on.create(*_TRAINING_JOBS, id="training-job-create")
@kopf.on.update(*_TRAINING_JOBS, id="training-job-update")
def reconcile_training_job(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    """Admit, start, restart and finish one TrainingJob (kiln.controllers.trainingjob)."""
    with _as_kopf_errors():
        memo.training_jobs.reconcile(namespace or "default", name)


def _time_can_move(spec: Mapping[str, Any], status: Mapping[str, Any], **_: Any) -> bool:
    """A finished job waits only for its ttlSecondsAfterFinished; the others tick."""
    return status.get("phase") not in training_plan.FINISHED or spec.get("ttlSecondsAfterFinished") is not None


@kopf.timer(*_TRAINING_JOBS, interval=TRAINING_TICK_SECONDS, id="training-job-tick", when=_time_can_move)
def tick_training_job(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    """Time moves jobs too: back-off, deadlines, queue timeouts, ttlSecondsAfterFinished, and
    capacity freed by other jobs."""
    with _as_kopf_errors():
        memo.training_jobs.reconcile(namespace or "default", name)


@kopf.on.event("", "v1", "pods", labels={workers.JOB_LABEL: kopf.PRESENT})
def worker_changed(labels: Mapping[str, str], namespace: str | None, memo: Any, **_: Any) -> None:
    """A worker started, finished or failed: its job acts now rather than at the next tick."""
    with contextlib.suppress(client.ApiError, pydantic.ValidationError):  # the next tick retries
        memo.training_jobs.reconcile(namespace or "default", labels[workers.JOB_LABEL])


@kopf.on.delete(*_TRAINING_JOBS, id="training-job-delete", optional=True)
def forget_training_job(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    memo.training_jobs.forget(namespace or "default", name)


def run_operator(
    namespaces: Sequence[str], liveness_endpoint: str | None, standalone: bool, verbose: bool = False
) -> None:
    """Run the operator until it is stopped: every namespace when none are named."""
    kopf.configure(verbose=verbose, log_prefix=True)
    kopf.run(
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        liveness_endpoint=liveness_endpoint,
        standalone=standalone,
    )
