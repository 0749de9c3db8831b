"""Training progress folded from rank 0's reports, with time injected: percent, the smoothed rate,
the ETA, reports seen again, a step going back after a restart, and a finished job at 100%."""

from __future__ import annotations

from typing import Any

import pytest
from training_fixtures import at

from kiln.api import trainingjob
from kiln.training import progress

Report = trainingjob.ProgressReport


def report(step: int, total: int | None = 1000, **fields: Any) -> Report:
    return Report(step=step, total_steps=total, **fields)


@pytest.mark.parametrize(
    ("reports", "percent", "rate", "eta"),
    [
        pytest.param([(0, report(100))], 10.0, None, None, id="one-report-has-no-rate-yet"),
        pytest.param([(0, report(100)), (10, report(200))], 20.0, 10.0, "1m20s", id="ten-steps-a-second"),
        pytest.param(
            [(0, report(100)), (10, report(200)), (20, report(500))],
            50.0,
            20.0,  # the newest rate, 30/s, weighted half against the 10/s before it
            "25s",
            id="the-rate-is-smoothed",
        ),
        pytest.param([(0, report(100, total=None)), (10, report(200, total=None))], None, 10.0, None, id="no-total"),
        pytest.param([(0, report(900)), (10, report(500))], 50.0, None, None, id="a-step-back-starts-afresh"),
        pytest.param([(0, report(100)), (3600, report(101))], 10.1, 0.0, "899h0m", id="hours"),
    ],
)
def test_progress_percent_rate_and_eta(
    reports: list[tuple[int, Report]], percent: float | None, rate: float | None, eta: str | None
) -> None:
    folded = None
    for seconds, one in reports:
        folded = progress.fold(folded, one, at(seconds))

    assert folded is not None
    assert (folded.percent, folded.steps_per_second, folded.eta) == (percent, rate, eta)


def test_a_report_seen_again_changes_nothing() -> None:
    first = progress.fold(None, report(100, epoch=1, metrics={"loss": 0.5}), at(0))

    assert progress.fold(first, report(100, epoch=1, metrics={"loss": 0.5}), at(30)) is first


def test_a_finished_job_is_at_100_percent() -> None:
    folded = progress.fold(None, report(990), at(0))

    assert (progress.finished(folded).percent, progress.finished(folded).eta) == (100.0, "0s")


@pytest.mark.parametrize(("seconds", "text"), [(45.4, "45s"), (750, "12m30s"), (3720, "1h2m"), (0, "0s")])
def test_durations_read_as_kubectl_ages(seconds: float, text: str) -> None:
    assert progress.duration(seconds) == text
