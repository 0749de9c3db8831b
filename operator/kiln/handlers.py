"""kopf wiring: the only module that imports kopf.

Handlers stay a few lines each: gather what they observe, call a pure plan from
a domain package, apply it through `kiln.kube`, record status. The controllers
of the three kinds register here as they arrive.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import kopf

from kiln.api import base

FINALIZER = f"{base.GROUP}/finalizer"


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
