"""Retention: forget minute partitions older than the retention period, keep their data.

Dagster's UI slows past ~100,000 partitions, which minute partitions reach in ~69 days. Once a
minute file is older than `retention_days` (default 60, `JAM_RETENTION_DAYS`) and its raw_log and
tables were materialized, its key is deleted from `minute_files`. Its rows stay in the exports and
the warehouse, and its run history stays in the instance. Re-running an old minute later is just
`jam-etl run` (or the sensor, if the file changes inside the watch window): the key is registered
again.
"""

from datetime import datetime, timedelta, timezone

import dagster as dg

from ..core import schema
from ..core.minute_files import minute_start
from .partitions import minute_files
from .settings import JamSettings


def prunable(keys: list[str], now: datetime, retention_days: float) -> list[str]:
    cutoff = now - timedelta(days=retention_days)
    return [k for k in keys if minute_start(k) + timedelta(minutes=1) <= cutoff]


@dg.op(description="Delete minute_files partitions older than the retention period whose outputs were materialized.")
def prune_minute_partitions(context: dg.OpExecutionContext, settings: JamSettings) -> int:
    instance = context.instance
    old = prunable(instance.get_dynamic_partitions(minute_files.name), datetime.now(timezone.utc), settings.retention_days)
    if not old:
        context.log.info("no minute partitions past the retention period")
        return 0
    done = set(old)
    for asset in schema.MINUTE_FILE_ASSETS:
        done &= instance.get_materialized_partitions(dg.AssetKey(asset))
    kept = len(old) - len(done)
    for key in sorted(done):
        instance.delete_dynamic_partition(minute_files.name, key)
    context.log.info(
        f"deleted {len(done)} minute partitions older than {settings.retention_days:g} days"
        + (f"; kept {kept} that are not fully materialized yet" if kept else "")
    )
    return len(done)


@dg.job(description="Retention for the minute_files partitions (see jam_assets/defs/retention.py).")
def prune_minute_partitions_job():
    prune_minute_partitions()


def retention_schedule(running: bool) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="daily_partition_retention",
        job=prune_minute_partitions_job,
        cron_schedule="17 3 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED,
    )
