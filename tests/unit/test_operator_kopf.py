"""How the operator sets kopf up for a big cluster: kopf's success line for each watch event that only
feeds the training inventory is dropped from the log (one per node, quota or job event in the
cluster), nothing else is; and kopf's diff base is built only for the kinds with create/update
handlers."""

from __future__ import annotations

import logging

import kopf
import pytest

from kiln import handlers


def record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)


@pytest.mark.parametrize(
    ("message", "kept"),
    [
        pytest.param("Handler 'training-inventory-nodes' succeeded.", False, id="inventory-success"),
        pytest.param("Handler 'training-inventory-jobs' succeeded.", False, id="inventory-jobs-success"),
        pytest.param(
            "Handler 'training-inventory-nodes' failed with an exception and will try again in 60 seconds: boom",
            True,
            id="inventory-failure",
        ),
        pytest.param("Handler 'model-version-create' succeeded.", True, id="other-handler"),
        pytest.param("Creation is processed: 1 succeeded; 0 failed.", True, id="summary"),
    ],
)
def test_only_the_inventory_handlers_success_lines_are_dropped(message: str, kept: bool) -> None:
    assert handlers.quiet_inventory_handlers(record(message)) is kept


def essence(body: dict[str, object]) -> dict[str, object]:
    storage = handlers.ChangeHandledOnly(prefix="kiln.dev", key="last-handled-configuration")
    return dict(storage.build(body=kopf.Body(body)))


def test_the_diff_base_of_a_kind_with_change_handlers_is_its_spec() -> None:
    body = {
        "apiVersion": "kiln.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "ml", "labels": {"team": "a"}},
        "spec": {"model": "iris"},
        "status": {"phase": "Healthy"},
    }

    assert essence(body) == {"metadata": {"labels": {"team": "a"}}, "spec": {"model": "iris"}}


@pytest.mark.parametrize(("api_version", "kind"), [("v1", "Pod"), ("v1", "Node"), ("kiln.dev/v1alpha1", "TrainingJob")])
def test_a_watch_only_kind_gets_no_diff_base(api_version: str, kind: str) -> None:
    body = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}, "spec": {"a": 1}}

    assert essence(body) == {}
