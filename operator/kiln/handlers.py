"""kopf wiring: the only module that imports kopf.

Handlers stay a few lines each: gather what they observe, call a pure plan from
a domain package, apply it through `kiln.kube`, record status. The controllers
of the three kinds register here as they arrive.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

import kopf
import pydantic

from kiln import artifacts
from kiln.api import base, resources
from kiln.controllers import metrics, modeldeployment, modelversion, peering, trainingjob
from kiln.delivery import serving
from kiln.kube import client
from kiln.training import inventory
from kiln.training import plan as training_plan

FINALIZER = f"{base.GROUP}/finalizer"
RETRY_DELAY_SECONDS = 5
PEERING_LIFETIME_SECONDS = 15
METRICS = metrics.Metrics()
"""The operator's own metrics, which `run_operator` serves on its metrics port."""


_CHANGE_HANDLED = frozenset(
    (f"{base.GROUP}/{base.VERSION}", kind.kind) for kind in (resources.MODEL_VERSION, resources.MODEL_DEPLOYMENT)
)


class ChangeHandledOnly(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff base, built only for the kinds with create/update handlers. kopf builds it (a deep
    copy of the object) for every watch event to tell what changed, and the watch-only kinds (every
    node, quota and TrainingJob event feeds the training inventory) would pay for it for nothing."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        if (body.get("apiVersion"), body.get("kind")) not in _CHANGE_HANDLED:
            return kopf.BodyEssence()
        return super().build(body=body, extra_fields=extra_fields)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Keep kopf's bookkeeping in kiln.dev annotations: the CRD schemas are structural,
    so the API server would prune kopf's default `status.kopf` field."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=base.GROUP)
    settings.persistence.diffbase_storage = ChangeHandledOnly(prefix=base.GROUP, key="last-handled-configuration")
    settings.posting.level = logging.INFO
    # kopf pauses every peer that sees another of the same priority, itself included, so replicas that
    # all kept the default would all stand by: each draws its own, and the highest is the active one.
    settings.peering.priority = random.SystemRandom().randrange(1, 2**31)
    # A replica killed without a goodbye counts as alive until its lifetime runs out; the standby
    # takes over after at most this long.
    settings.peering.lifetime = PEERING_LIFETIME_SECONDS


@kopf.on.startup()
def connect(memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any) -> None:
    """One API client and the artifact stores' settings, shared by every reconcile; under peering,
    the TrainingJob wake-ups follow kopf's peering as kopf itself does (`kiln.controllers.peering`)."""
    kube = client.connect()
    memo.model_versions = modelversion.Controller(kube, artifacts.Settings.from_environment(), metrics=METRICS)
    acting = peering.always
    if not settings.peering.standalone and getattr(memo, "peer", None):
        replica = peering.Replica(kube, memo.peer, settings.peering.priority, memo.namespaces)
        acting = replica.acting
    memo.training_jobs = trainingjob.Controller(kube, training_settings(), metrics=METRICS, acting=acting)
    # The pods builtin admission counts come from an informer of its own, not a kopf watch handler:
    # kopf's handling of each pod event in the cluster was most of the operator's time in a burst of
    # jobs. It runs on standby too (a standby's inventory is only memory; its wake-ups wait).
    memo.training_pods = memo.training_jobs.pod_informers(kube, getattr(memo, "namespaces", ()))
    for informer in memo.training_pods:
        informer.start()
    memo.training_jobs.start()
    memo.model_deployments = modeldeployment.Controller(
        kube, serving_settings(), default_prometheus=os.environ.get(PROMETHEUS_URL_ENV) or None, metrics=METRICS
    )


PROMETHEUS_URL_ENV = "KILN_PROMETHEUS_URL"


def serving_settings(environ: Mapping[str, str] = os.environ) -> serving.Settings:
    """KILN_SERVING_IMAGE: the image whose kiln-server and kiln-router serve models."""
    return serving.Settings(image=environ.get("KILN_SERVING_IMAGE", serving.Settings().image))


@kopf.on.cleanup()
def disconnect(memo: kopf.Memo, **_: Any) -> None:
    """Stop the TrainingJob pod informers and wake-ups."""
    for informer in getattr(memo, "training_pods", ()):
        informer.stop()
    if hasattr(memo, "training_jobs"):
        memo.training_jobs.stop()


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
_INVENTORY_PREFIX = "training-inventory-"


# What builtin admission reads, fed from watches (kiln.training.inventory); no I/O, so async: each
# event costs no thread. Pods come from an informer of Kiln's own (`connect`); the rest stay on kopf's
# one event loop, so a quota is taken in before the jobs submitted after it. A TrainingJob that is new
# or changed (its spec, its deletion) wakes, and so does a job whose worker changed; so do time-driven
# steps (back-off, deadlines, queue timeouts, time to live) and capacity freeing for a queued job: the
# controller's own wake-ups run those reconciles (a burst of events for one job is one reconcile), not
# a per-job timer. TrainingJobs have watch handlers only, so kopf never writes to them: no annotation
# of its own to race the status writes.
@kopf.on.event("", "v1", "nodes", id=f"{_INVENTORY_PREFIX}nodes")
async def node_seen(type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    memo.training_jobs.watched(inventory.NODE, type, body)


@kopf.on.event("scheduling.k8s.io", "v1", "priorityclasses", id=f"{_INVENTORY_PREFIX}priority-classes")
async def priority_class_seen(type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    memo.training_jobs.watched(inventory.PRIORITY_CLASS, type, body)


@kopf.on.event("", "v1", "resourcequotas", id=f"{_INVENTORY_PREFIX}quotas")
async def resource_quota_seen(type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    memo.training_jobs.watched(inventory.RESOURCE_QUOTA, type, body)


@kopf.on.event(*_TRAINING_JOBS, id=f"{_INVENTORY_PREFIX}jobs")
async def training_job_seen(type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    memo.training_jobs.watched(inventory.TRAINING_JOB, type, body)


def quiet_inventory_handlers(record: logging.LogRecord) -> bool:
    """Drop kopf's "Handler 'training-inventory-jobs' succeeded." lines: one for every node, quota or
    job event in the cluster, from handlers that only feed memory, they would be most of the log (and a
    good part of the operator's time in a big cluster). Their failures are still logged."""
    message = record.getMessage()
    return not (message.startswith(f"Handler '{_INVENTORY_PREFIX}") and message.endswith(" succeeded."))


_MODEL_DEPLOYMENTS = (base.GROUP, base.VERSION, resources.MODEL_DEPLOYMENT.plural)
ROLLOUT_TICK_SECONDS = 1.0
STEADY_TICK_SECONDS = 15.0


@kopf.on.resume(*_MODEL_DEPLOYMENTS, id="model-deployment-resume")
@kopf.on.create(*_MODEL_DEPLOYMENTS, id="model-deployment-create")
@kopf.on.update(*_MODEL_DEPLOYMENTS, id="model-deployment-update")
def reconcile_model_deployment(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    """Serve, roll out, analyse and roll back one ModelDeployment (kiln.controllers.modeldeployment)."""
    with _as_kopf_errors():
        memo.model_deployments.reconcile(namespace or "default", name)


def _rolling_out(status: Mapping[str, Any], **_: Any) -> bool:
    """Steps, pauses, analysis intervals and scale-down delays move with time; a settled deployment
    only needs the slow tick that notices what no event announced."""
    return bool(status.get("candidateVersion") or status.get("retiring")) or status.get("phase") != "Healthy"


@kopf.timer(*_MODEL_DEPLOYMENTS, interval=ROLLOUT_TICK_SECONDS, id="model-deployment-tick", when=_rolling_out)
@kopf.timer(*_MODEL_DEPLOYMENTS, interval=STEADY_TICK_SECONDS, id="model-deployment-steady-tick")
def tick_model_deployment(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    with _as_kopf_errors():
        memo.model_deployments.reconcile(namespace or "default", name)


@kopf.on.event("apps", "v1", "deployments", labels={serving.DEPLOYMENT_LABEL: kopf.PRESENT})
def serving_changed(labels: Mapping[str, str], namespace: str | None, memo: Any, **_: Any) -> None:
    """Pods of a version became ready (or stopped being): its deployment acts now, not at the next tick."""
    with contextlib.suppress(client.ApiError, pydantic.ValidationError):  # the next tick retries
        memo.model_deployments.reconcile(namespace or "default", labels[serving.DEPLOYMENT_LABEL])


@kopf.on.event(*_MODEL_VERSIONS, id="model-version-serving")
def version_changed(body: Mapping[str, Any], namespace: str | None, memo: Any, **_: Any) -> None:
    """A version was validated, promoted or annotated: the deployments of its model look again."""
    model = (body.get("spec") or {}).get("modelName")
    if model:
        with contextlib.suppress(client.ApiError, pydantic.ValidationError):
            memo.model_deployments.reconcile_model(namespace or "default", model)


@kopf.on.delete(*_MODEL_DEPLOYMENTS, id="model-deployment-delete", optional=True)
def forget_model_deployment(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    memo.model_deployments.forget(namespace or "default", name)


def run_operator(
    namespaces: Sequence[str],
    liveness_endpoint: str | None,
    standalone: bool,
    verbose: bool = False,
    metrics_port: int = 0,
) -> None:
    """Run the operator until it is stopped: every namespace when none are named; with a metrics port,
    /metrics is served on it (all addresses)."""
    kopf.configure(verbose=verbose, log_prefix=True)
    if not verbose:
        logging.getLogger("kopf.objects").addFilter(quiet_inventory_handlers)
    if metrics_port:
        METRICS.serve(metrics_port)
    identity = peering.own_identity()
    kopf.run(
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        liveness_endpoint=liveness_endpoint,
        standalone=standalone,
        identity=cast(Any, identity),  # kopf's Identity: a NewType of str that kopf does not export
        memo=kopf.Memo(peer=identity, namespaces=tuple(namespaces)),
    )
