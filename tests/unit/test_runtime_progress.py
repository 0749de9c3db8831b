"""kiln.runtime.progress: rank 0's reports, throttled by an injected clock, sent through a fake
sender; a sender that fails is logged once and never raises into training."""

from __future__ import annotations

import json

import pytest

from kiln.runtime import progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Sent(list[dict[str, object]]):
    def __call__(self, report: str) -> None:
        self.append(json.loads(report))


def reporter(sent: Sent, clock: Clock, logged: list[str] | None = None) -> progress.Reporter:
    return progress.Reporter(sent, interval=5.0, clock=clock, log=(logged if logged is not None else []).append)


def test_the_first_report_goes_at_once_and_sooner_ones_wait_the_newest_winning() -> None:
    sent, clock = Sent(), Clock()
    reports = reporter(sent, clock)

    reports.report(1, 10, epoch=0, metrics={"loss": 0.9})
    clock.now += 1
    reports.report(2, 10, epoch=0, metrics={"loss": 0.8})
    clock.now += 1
    reports.report(3, 10, epoch=1, metrics={"loss": 0.7})
    assert [report["step"] for report in sent] == [1]

    clock.now += 3  # 5 s since the last one was sent
    reports.report(4, 10, epoch=1, metrics={"loss": 0.6})
    assert sent[-1] == {"step": 4, "totalSteps": 10, "epoch": 1, "metrics": {"loss": 0.6}}


def test_close_sends_the_report_that_waits_so_the_last_step_is_never_lost() -> None:
    sent, clock = Sent(), Clock()
    with reporter(sent, clock) as reports:
        reports.report(1, 2)
        clock.now += 1
        reports.report(2, 2, metrics={"loss": 0.1})
        assert len(sent) == 1

    assert sent[-1] == {"step": 2, "totalSteps": 2, "metrics": {"loss": 0.1}}
    reports.close()
    assert len(sent) == 2  # nothing waits: closing again sends nothing


def test_a_final_report_goes_at_once() -> None:
    sent, clock = Sent(), Clock()
    reports = reporter(sent, clock)
    reports.report(0, 1)
    reports.report(1, 1, final=True)

    assert [report["step"] for report in sent] == [0, 1]


def test_metrics_that_are_not_finite_numbers_are_left_out() -> None:
    sent = Sent()
    reporter(sent, Clock()).report(0, 5, metrics={"loss": float("nan"), "accuracy": 0.5, "gain": float("inf")})

    assert sent[0]["metrics"] == {"accuracy": 0.5}


def test_a_sender_that_fails_is_logged_once_and_training_goes_on() -> None:
    logged: list[str] = []
    clock = Clock()
    calls: list[str] = []

    def refused(report: str) -> None:
        calls.append(report)
        raise RuntimeError("403 Forbidden")

    reports = progress.Reporter(refused, interval=5.0, clock=clock, log=logged.append)
    for step in range(3):
        reports.report(step, 3)
        clock.now += 10

    assert len(calls) == 3  # it keeps trying: the API may come back
    assert logged == [
        "kiln: progress not reported (RuntimeError: 403 Forbidden); training goes on, further failures are not logged"
    ]


def test_a_report_that_is_not_valid_is_logged_not_raised() -> None:
    logged: list[str] = []
    sent = Sent()
    reporter(sent, Clock(), logged).report(-1, 10)

    assert sent == []
    assert len(logged) == 1
    assert logged[0].startswith("kiln: a progress report is not valid (")


@pytest.mark.parametrize(
    ("environ", "reports"),
    [
        pytest.param({"KILN_POD_NAME": "bert-worker-0", "KILN_NAMESPACE": "ml", "RANK": "0"}, True, id="rank-0"),
        pytest.param({"KILN_POD_NAME": "bert-worker-0", "KILN_NAMESPACE": "ml"}, True, id="single-worker"),
        pytest.param({"KILN_POD_NAME": "bert-worker-1", "KILN_NAMESPACE": "ml", "RANK": "1"}, False, id="rank-1"),
        pytest.param({"RANK": "0"}, False, id="outside-a-kiln-pod"),
    ],
)
def test_only_rank_0_of_a_kiln_pod_reports(environ: dict[str, str], reports: bool) -> None:
    assert (progress.from_environment(environ) is not None) is reports


def test_a_reporter_outside_a_kiln_pod_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KILN_POD_NAME", raising=False)
    reports = progress.Reporter()

    assert not reports.enabled
    reports.report(1, 2)
    reports.close()
