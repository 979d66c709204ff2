"""The sensor on the log root: registers closed minute files as partitions and requests their runs."""


import hashlib
from datetime import datetime, timezone

import dagster as dg

from ..core.watch import WatchCursor, plan_from_disk
from .jobs import minute_tables_job
from .partitions import minute_files, range_tags
from .settings import JamSettings

SENSOR_INTERVAL_SECONDS = 10


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dg.sensor(
    name="minute_file_sensor",
    job=minute_tables_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Registers each closed minute file under JAM_LOG_DIR as a partition and materializes every "
    "table for it; re-runs a file that changes within the watch window.",
)
def minute_file_sensor(context: dg.SensorEvaluationContext, settings: JamSettings) -> dg.SensorResult:
    cursor = WatchCursor.loads(context.cursor)
    registered = set(context.instance.get_dynamic_partitions(minute_files.name))
    plan = plan_from_disk(
        settings.log_root, cursor, _now(), settings.grace_seconds, settings.watch_seconds, registered
    )
    run_requests: list[dg.RunRequest] = []
    if len(plan.new) == 1:
        f = plan.new[0]
        run_requests.append(dg.RunRequest(run_key=f"{f.key}@{f.signature}", partition_key=f.key))
    elif plan.new:
        # New keys are registered in sorted order in this tick, so they are contiguous: one run.
        first, last = plan.new[0].key, plan.new[-1].key
        digest = hashlib.sha1("".join(f"{f.key}@{f.signature};" for f in plan.new).encode()).hexdigest()[:12]
        run_requests.append(
            dg.RunRequest(run_key=f"{first}...{last}@{digest}", tags=range_tags(first, last))
        )
    for f in plan.changed:
        context.log.info(f"minute file {f.key} changed since it was processed ({f.signature}); processing it again")
        run_requests.append(dg.RunRequest(run_key=f"{f.key}@{f.signature}", partition_key=f.key))
    for key in plan.gone:
        context.log.warning(f"minute file {key} disappeared from {settings.log_root}; its outputs are left alone")
    if plan.adopted:
        context.log.info(
            f"{len(plan.adopted)} closed minute files were already registered (e.g. by jam-etl run); "
            "not requesting them again"
        )
    if plan.deferred:
        context.log.info(f"{plan.deferred} more new minute files will be requested on the next tick")
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[minute_files.build_add_request([f.key for f in plan.new])] if plan.new else [],
        cursor=plan.cursor.dumps(),
    )
