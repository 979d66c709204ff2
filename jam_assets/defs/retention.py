"""Retention: forget minute partitions older than the retention period; optionally prune old exports.

Dagster's UI slows past ~100,000 partitions, which minute partitions reach in ~69 days. Once a
minute file is older than `retention_days` (default 60, `JAM_RETENTION_DAYS`) and its raw_log and
tables were materialized, its key is deleted from `minute_files`. Its rows stay in the exports and
the warehouse, and its run history stays in the instance. Re-running an old minute later is just
`jam-etl run` (or the sensor, if the file changes inside the watch window): the key is registered
again.

The exports are kept forever unless `JAM_EXPORT_RETENTION_DAYS` is set: then the same daily job
deletes the export files of minutes older than that (whole day folders). The warehouse keeps its
rows either way; Dune has what it was sent.
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import dagster as dg

from ..core import schema
from ..core.minute_files import minute_start
from ..core.staging import prune_exports
from .partitions import MINUTE_FILES
from .settings import JamSettings


def prunable(keys: Sequence[str], now: datetime, retention_days: float) -> list[str]:
    cutoff = now - timedelta(days=retention_days)
    return [k for k in keys if minute_start(k) + timedelta(minutes=1) <= cutoff]


@dg.op(description="Delete minute_files partitions older than the retention period whose outputs were materialized.")
def prune_minute_partitions(context: dg.OpExecutionContext, settings: JamSettings) -> int:
    instance = context.instance
    old = prunable(instance.get_dynamic_partitions(MINUTE_FILES), datetime.now(UTC), settings.retention_days)
    if not old:
        context.log.info("no minute partitions past the retention period")
        return 0
    done = set(old)
    for asset in schema.MINUTE_FILE_ASSETS:
        done &= instance.get_materialized_partitions(dg.AssetKey(asset))
    kept = len(old) - len(done)
    for key in sorted(done):
        instance.delete_dynamic_partition(MINUTE_FILES, key)
    context.log.info(
        f"deleted {len(done)} minute partitions older than {settings.retention_days:g} days"
        + (f"; kept {kept} that are not fully materialized yet" if kept else "")
    )
    return len(done)


@dg.op(description="Delete export files of minutes older than JAM_EXPORT_RETENTION_DAYS (0, the default: keep all).")
def prune_old_exports(context: dg.OpExecutionContext, settings: JamSettings) -> int:
    if not settings.export_retention_days:
        context.log.info("exports are kept (JAM_EXPORT_RETENTION_DAYS is 0)")
        return 0
    before = (datetime.now(UTC) - timedelta(days=settings.export_retention_days)).date()
    files, size = prune_exports(settings.export_root, schema.ALL_TABLES, before)
    context.log.info(f"deleted {files} export files ({size / 1e6:.1f} MB) of minutes before {before}")
    context.add_output_metadata({"files_deleted": files, "bytes_deleted": size, "before": str(before)})
    return files


@dg.job(description="Retention for the minute_files partitions and the exports (see jam_assets/defs/retention.py).")
def prune_minute_partitions_job():
    prune_minute_partitions()
    prune_old_exports()


def retention_schedule(running: bool) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="daily_partition_retention",
        job=prune_minute_partitions_job,
        cron_schedule="17 3 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED,
    )
