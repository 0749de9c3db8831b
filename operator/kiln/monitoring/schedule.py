"""Cron schedules of Schedule triggers, in UTC, read by croniter (the parser the dev cluster's
CronJobs already use, kept by pallets-eco), @-names such as `@daily` included."""

from __future__ import annotations

import datetime

import croniter


def check(schedule: str) -> str | None:
    """Why croniter refuses `schedule`, or None when it reads it."""
    try:
        croniter.croniter(schedule, datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC))
    except croniter.CroniterError as error:
        return f"schedule {schedule!r} is not a cron schedule: {error}"
    return None


def _ticks(schedule: str, start: datetime.datetime) -> croniter.croniter:
    problem = check(schedule)
    if problem:
        raise ValueError(problem)
    return croniter.croniter(schedule, start)


def latest_tick(schedule: str, now: datetime.datetime) -> datetime.datetime:
    """The last tick at or before `now`. ValueError when croniter refuses the schedule."""
    # croniter steps strictly before its start; one second on keeps a tick at `now` itself.
    tick: datetime.datetime = _ticks(schedule, now + datetime.timedelta(seconds=1)).get_prev(datetime.datetime)
    return tick


def next_tick(schedule: str, now: datetime.datetime) -> datetime.datetime:
    """The first tick after `now`. ValueError when croniter refuses the schedule."""
    tick: datetime.datetime = _ticks(schedule, now).get_next(datetime.datetime)
    return tick


def due(schedule: str, handled: datetime.datetime, now: datetime.datetime) -> datetime.datetime | None:
    """The latest tick after `handled` and at or before `now`, or None. Ticks missed while the
    operator was away count as one: a retraining is not worth repeating for each."""
    tick = latest_tick(schedule, now)
    return tick if tick > handled else None
