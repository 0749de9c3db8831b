"""The operator's log keeps what a person reads: kopf's success line for each watch event that only
feeds the training inventory is dropped (one per pod event in the cluster), nothing else is."""

from __future__ import annotations

import logging

import pytest

from kiln import handlers


def record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)


@pytest.mark.parametrize(
    ("message", "kept"),
    [
        pytest.param("Handler 'training-inventory-pods' succeeded.", False, id="inventory-success"),
        pytest.param("Handler 'training-inventory-jobs' succeeded.", False, id="inventory-jobs-success"),
        pytest.param(
            "Handler 'training-inventory-pods' failed with an exception and will try again in 60 seconds: boom",
            True,
            id="inventory-failure",
        ),
        pytest.param("Handler 'model-version-create' succeeded.", True, id="other-handler"),
        pytest.param("Creation is processed: 1 succeeded; 0 failed.", True, id="summary"),
    ],
)
def test_only_the_inventory_handlers_success_lines_are_dropped(message: str, kept: bool) -> None:
    assert handlers.quiet_inventory_handlers(record(message)) is kept
