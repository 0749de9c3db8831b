"""kopf wiring: the only module that imports kopf.

Handlers stay a few lines each: gather what they observe, call a pure plan from
a domain package, apply it through `kiln.kube`, record status. The controllers
of the three kinds register here as they arrive.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import kopf
import pydantic

from kiln import artifacts
from kiln.api import base, resources
from kiln.controllers import modelversion
from kiln.kube import client

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
    memo.model_versions = modelversion.Controller(client.connect(), artifacts.Settings.from_environment())


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
