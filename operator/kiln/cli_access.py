"""How the kubectl-style commands reach the cluster, and as whom: shared by the registry's and the rollout's.

`cluster_options` adds --namespace, --as, --kubeconfig and --context as kubectl takes them; `whoami`
asks the API server who the caller is (SelfSubjectReview), so a request carries the name the
cluster knows, not one the caller typed. Every failure becomes a `click.ClickException`.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from kiln.kube import client


@dataclass(frozen=True)
class Access:
    """How to reach the cluster and as whom, from the kubectl-style options."""

    namespace: str | None
    impersonate: str | None
    kubeconfig: str | None
    context: str | None

    def connect(self) -> tuple[client.Api, str]:
        """A client and the namespace to work in (--namespace, else the kubeconfig context's)."""
        try:
            kube = client.connect(self.kubeconfig, self.context, self.impersonate)
        except Exception as error:  # the kubernetes package raises its own ConfigException and OSErrors
            raise click.ClickException(f"cannot reach the cluster: {error}") from None
        return kube, self.namespace or kube.namespace


def cluster_options(command: Callable[..., None]) -> Callable[..., None]:
    """Add --namespace, --as, --kubeconfig and --context, as kubectl takes them, passed on as `access`."""

    @functools.wraps(command)
    def with_access(
        *, namespace: str | None, impersonate: str | None, kubeconfig: str | None, context: str | None, **kwargs: Any
    ) -> None:
        command(access=Access(namespace, impersonate, kubeconfig, context), **kwargs)

    options = [
        click.option("--namespace", "-n", default=None, help="The namespace [default: the kubeconfig context's]."),
        click.option("--as", "impersonate", default=None, help="Act as this user, as `kubectl --as` does."),
        click.option("--kubeconfig", default=None, help="The kubeconfig [default: $KUBECONFIG, ~/.kube/config]."),
        click.option("--context", default=None, help="The kubeconfig context [default: the current one]."),
    ]
    return functools.reduce(lambda decorated, option: option(decorated), reversed(options), with_access)


def whoami(kube: client.Api) -> str:
    """The user the API server authenticates `kube` as."""
    try:
        return kube.whoami()
    except client.ApiError as error:
        raise click.ClickException(f"the API server did not say who you are: {error}") from None


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
