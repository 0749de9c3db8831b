"""The dev cluster's CronJob controller runs Jobs at the times kube-controller-manager would, over a
real registry with the controller's clock injected; every CronJob here was created at CREATED."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest

from kiln.devcluster import controllers, cronjobs, errors, jobs, objects, registry, store

Object = dict[str, Any]


CREATED = datetime.datetime(2026, 6, 1, 10, 2, 30, tzinfo=datetime.UTC)


def minutes_after_creation(minutes: float) -> datetime.datetime:
    return CREATED + datetime.timedelta(minutes=minutes)


class World:
    def __init__(self, schedule: str, **spec: Any) -> None:
        self.cluster = registry.Registry(store.Store(None))
        self.cluster.admission.extend([jobs.default_selector, cronjobs.validate])
        body = {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "nightly"},
            "spec": {
                "schedule": schedule,
                "jobTemplate": {
                    "metadata": {"labels": {"team": "ml"}},
                    "spec": {"template": {"spec": {"containers": [{"name": "report", "image": "busybox"}]}}},
                },
                **spec,
            },
        }
        resource = self.cluster.types.get("batch", "v1", "cronjobs")
        assert resource is not None
        created = self.cluster.create(resource, "default", body)
        created["metadata"]["creationTimestamp"] = objects.format_time(CREATED)
        self.cluster.store.write(cronjobs.CRON_JOB, created, "MODIFIED")
        self.now = CREATED
        self.controller = cronjobs.CronJobController(self.cluster, lambda: self.now)
        self.client = controllers.Client(self.cluster, "test")

    def at(self, minutes: float) -> float | None:
        """Reconcile `minutes` after the CronJob was created; seconds until it wants to look again."""
        self.now = minutes_after_creation(minutes)
        return asyncio.run(self.controller.reconcile(("default", "nightly")))

    def jobs(self) -> list[Object]:
        live = [
            job for job in self.client.list(controllers.JOB, "default") if not job["metadata"].get("deletionTimestamp")
        ]
        return sorted(live, key=lambda job: job["metadata"]["name"])

    def status(self) -> Object:
        found = self.client.get(cronjobs.CRON_JOB, "default", "nightly") or {}
        return dict(found.get("status") or {})

    def reasons(self) -> list[str]:
        return [event["reason"] for event in self.client.list(controllers.EVENT, "default")]

    def finish(self, job: Object, outcome: str) -> None:
        status: Object = {"conditions": [{"type": outcome, "status": "True"}]}
        if outcome == "Complete":
            status["completionTime"] = objects.format_time(self.now)
        self.client.update_status(controllers.JOB, job, status)


def test_only_the_latest_missed_time_runs_as_one_job_named_by_its_minute() -> None:
    world = World("*/5 * * * *")

    world.at(16)  # 10:05, 10:10 and 10:15 were missed

    due = datetime.datetime(2026, 6, 1, 10, 15, tzinfo=datetime.UTC)
    [job] = world.jobs()
    assert job["metadata"]["name"] == f"nightly-{int(due.timestamp()) // 60}"
    assert job["metadata"]["annotations"][cronjobs.SCHEDULED_TIMESTAMP] == objects.format_time(due)
    assert job["metadata"]["labels"]["team"] == "ml"
    assert [ref["name"] for ref in job["metadata"]["ownerReferences"]] == ["nightly"]
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox"
    status = world.status()
    assert status["lastScheduleTime"] == objects.format_time(due)
    assert [ref["name"] for ref in status["active"]] == [job["metadata"]["name"]]
    assert world.reasons() == ["SuccessfulCreate"]


def test_nothing_runs_before_the_first_time_and_the_controller_looks_again_then() -> None:
    world = World("30 10 * * *", timeZone="UTC")

    again = world.at(0)

    assert world.jobs() == []
    assert again == (datetime.datetime(2026, 6, 1, 10, 30, tzinfo=datetime.UTC) - CREATED).total_seconds()


def test_a_time_already_run_is_not_run_again() -> None:
    world = World("*/5 * * * *")
    world.at(3)  # 10:05
    world.at(6)  # 10:08: 10:05 ran already

    assert len(world.jobs()) == 1


@pytest.mark.parametrize(
    ("policy", "jobs_after", "reason"),
    [
        pytest.param("Allow", 2, "SuccessfulCreate", id="allow"),
        pytest.param("Forbid", 1, "JobAlreadyActive", id="forbid"),
        pytest.param("Replace", 1, "SuccessfulDelete", id="replace"),
    ],
)
def test_concurrency_policy_decides_what_happens_while_one_runs(policy: str, jobs_after: int, reason: str) -> None:
    world = World("*/5 * * * *", concurrencyPolicy=policy)
    world.at(6)
    [first] = world.jobs()

    world.at(11)

    names = [job["metadata"]["name"] for job in world.jobs()]
    assert len(names) == jobs_after
    assert (first["metadata"]["name"] in names) is (policy != "Replace")
    assert reason in world.reasons()


def test_a_suspended_cronjob_runs_nothing() -> None:
    world = World("*/5 * * * *", suspend=True)
    world.at(30)

    assert world.jobs() == []
    assert "lastScheduleTime" not in world.status()


def test_a_time_missed_by_more_than_the_starting_deadline_is_skipped_with_a_warning() -> None:
    world = World("*/5 * * * *", startingDeadlineSeconds=30)

    world.at(3)  # 10:05:30, 30 s after 10:05: still in time
    world.at(8.6)  # 10:11:06, 66 s after 10:10: too late

    assert len(world.jobs()) == 1
    assert sorted(world.reasons()) == ["MissSchedule", "SuccessfulCreate"]


def test_finished_jobs_leave_active_and_only_the_history_limits_are_kept() -> None:
    world = World("*/5 * * * *", successfulJobsHistoryLimit=2, failedJobsHistoryLimit=0)
    for step in range(4):
        world.at(6 + 5 * step)
        newest = world.jobs()[-1]
        world.finish(newest, "Failed" if step == 3 else "Complete")
    world.at(22)

    kept = world.jobs()
    assert len(kept) == 2  # the two newest successes; the failure is not kept
    assert all(job["status"]["conditions"][0]["type"] == "Complete" for job in kept)
    status = world.status()
    assert "active" not in status
    assert "lastSuccessfulTime" in status
    assert "SawCompletedJob" in world.reasons()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param({"schedule": "61 * * * *"}, 'spec.schedule: Invalid value: "61 * * * *"', id="minute"),
        pytest.param({"schedule": "TZ=UTC 0 3 * * *"}, "use timeZone field instead", id="tz-prefix"),
        pytest.param(
            {"schedule": "0 3 * * *", "timeZone": "Mars/Olympus"},
            'spec.timeZone: Invalid value: "Mars/Olympus": unknown time zone',
            id="zone",
        ),
    ],
)
def test_a_schedule_the_controller_cannot_follow_is_refused_at_admission(spec: Object, message: str) -> None:
    with pytest.raises(errors.ApiError) as refused:
        World(**spec)

    assert refused.value.code == 422
    assert message in str(refused.value)


def test_the_schedule_is_read_in_the_time_zone_named() -> None:
    world = World("0 16 * * *", timeZone="Asia/Kolkata")  # 16:00 at UTC+05:30 is 10:30 UTC

    world.at(27)  # 10:29:30
    world.at(28)  # 10:30:30

    [job] = world.jobs()
    assert job["metadata"]["annotations"][cronjobs.SCHEDULED_TIMESTAMP] == "2026-06-01T10:30:00Z"
