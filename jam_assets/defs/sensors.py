"""The sensor on the log root: registers closed minute files as partitions and requests their runs,
and requests again, with backoff, the minute files whose last run failed."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime, timedelta

import dagster as dg

from ..core import schema
from ..core.minute_files import minute_start
from ..core.watch import WatchCursor, plan_from_disk, plan_retries
from .jobs import minute_tables_job
from .partitions import MINUTE_FILES, minute_files, range_tags
from .settings import JamSettings

SENSOR_INTERVAL_SECONDS = 10
# Failed partitions are looked up at most this often, for the minute files of the last day.
FAILURE_CHECK_SECONDS = 60
FAILURE_LOOKBACK = timedelta(days=1)
ATTEMPT_TAG = "jam/retry_attempt"


def _now() -> datetime:
    return datetime.now(UTC)


def partition_states(instance: dg.DagsterInstance, keys: list[str]) -> tuple[set[str], set[str]]:
    """(minute files whose latest run failed for some asset, minute files being run), from Dagster's status."""
    failed: set[str] = set()
    running: set[str] = set()
    if not keys:
        return failed, running
    for asset in schema.MINUTE_FILE_ASSETS:
        status = instance.get_status_by_partition(dg.AssetKey(asset), keys, minute_files) or {}
        failed.update(k for k, s in status.items() if s == dg.AssetPartitionStatus.FAILED)
        running.update(k for k, s in status.items() if s == dg.AssetPartitionStatus.IN_PROGRESS)
    return failed - running, running


class RegisteredKeys:
    """`key in registered` for the minute_files partitions, without loading them all on every tick:
    a tick asks about a few new files (one key lookup each), the first tick over a big tree about
    many (then the keys are loaded once). At 86,400 keys, loading them took most of a tick."""

    LOOKUPS = 50

    def __init__(self, instance: dg.DagsterInstance):
        self.instance = instance
        self.lookups = 0
        self.all: set[str] | None = None

    def __contains__(self, key: object) -> bool:
        if self.all is None and self.lookups < self.LOOKUPS:
            self.lookups += 1
            return self.instance.has_dynamic_partition(MINUTE_FILES, str(key))
        if self.all is None:
            self.all = set(self.instance.get_dynamic_partitions(MINUTE_FILES))
        return key in self.all


def newest_registered(instance: dg.DagsterInstance, count: int) -> list[str]:
    """The `count` minute files registered last, in registration order."""
    page = instance.get_paginated_dynamic_partitions(MINUTE_FILES, limit=count, ascending=False)
    return list(reversed(page.results))


def _run_request(keys_or_range: tuple[str, str], run_key: str, tags: dict[str, str] | None = None) -> dg.RunRequest:
    first, last = keys_or_range
    if first == last:
        return dg.RunRequest(run_key=run_key, partition_key=first, tags=tags or {})
    return dg.RunRequest(run_key=run_key, tags={**range_tags(first, last), **(tags or {})})


@dg.sensor(
    name="minute_file_sensor",
    job=minute_tables_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Registers each closed minute file under JAM_LOG_DIR as a partition and materializes every "
    "table for it; re-runs a file that changes within the watch window; requests a minute file whose run "
    "failed again, with backoff (1, 2, 4 ... 32 minutes).",
)
def minute_file_sensor(context: dg.SensorEvaluationContext, settings: JamSettings) -> dg.SensorResult:
    cursor = WatchCursor.loads(context.cursor)
    now = _now()
    registered = RegisteredKeys(context.instance)
    plan = plan_from_disk(settings.log_root, cursor, now, settings.grace_seconds, settings.watch_seconds, registered)
    run_requests: list[dg.RunRequest] = []
    if plan.new:
        # New keys are registered in sorted order in this tick, so they are contiguous: one run.
        first, last = plan.new[0].key, plan.new[-1].key
        signature = (
            plan.new[0].signature
            if first == last
            else hashlib.sha1("".join(f"{f.key}@{f.signature};" for f in plan.new).encode()).hexdigest()[:12]
        )
        run_key = f"{first}@{signature}" if first == last else f"{first}...{last}@{signature}"
        run_requests.append(_run_request((first, last), run_key))
    for f in plan.changed:
        context.log.info(f"minute file {f.key} changed since it was processed ({f.signature}); processing it again")
        run_requests.append(_run_request((f.key, f.key), f"{f.key}@{f.signature}"))
    for key in plan.gone:
        context.log.warning(f"minute file {key} disappeared from {settings.log_root}; its outputs are left alone")
    if plan.adopted:
        context.log.info(
            f"{len(plan.adopted)} closed minute files were already registered (e.g. by jam-etl run); "
            "not requesting them again"
        )
    if plan.deferred:
        context.log.info(f"{plan.deferred} more new minute files will be requested on the next tick")

    next_cursor = plan.cursor
    next_cursor.retry, next_cursor.failures_checked = cursor.retry, cursor.failures_checked
    clock = time.time()
    if clock - cursor.failures_checked >= FAILURE_CHECK_SECONDS:
        since = now - FAILURE_LOOKBACK
        # The last day's minute files are among the last two days' registered (late days come later).
        ordered = newest_registered(context.instance, 2 * 1440)
        recent = [k for k in ordered if minute_start(k) >= since]
        failed, running = partition_states(context.instance, recent)
        retries = plan_retries(failed, running, cursor.retry, clock, ordered)
        next_cursor.retry, next_cursor.failures_checked = retries.retry, clock
        for first, last, attempt in retries.due:
            what = first if first == last else f"{first} ... {last}"
            context.log.warning(f"minute file(s) {what} failed; requesting them again (retry {attempt})")
            run_requests.append(
                _run_request(
                    (first, last), f"retry:{first}...{last}#{attempt}@{int(clock)}", {ATTEMPT_TAG: str(attempt)}
                )
            )
        for key in retries.given_up:
            context.log.error(
                f"minute file {key} failed on every retry; it stays failed until it is re-run by hand "
                "(Assets > raw_log > Materialize, or jam-etl run)"
            )
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[minute_files.build_add_request([f.key for f in plan.new])] if plan.new else [],
        cursor=next_cursor.dumps(),
    )
