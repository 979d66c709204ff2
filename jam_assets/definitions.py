"""The code location: `dagster dev` (via workspace.yaml) and `jam-etl` load `defs` from here."""

from __future__ import annotations

import dagster as dg

from .defs.assets import minute_file_tables
from .defs.dune import dune_schedule, dune_upload_job
from .defs.jobs import minute_tables_job
from .defs.resources import deployment_name, resources_for
from .defs.retention import prune_minute_partitions_job, retention_schedule
from .defs.sensors import minute_file_sensor
from .event_log_storage import batch_event_writes

# Every process that runs this code location's steps (jam-etl, a run launched by the daemon or the
# UI, `dagster asset materialize`) imports this module first: range runs then write their events
# in batches however they were started.
batch_event_writes()


def build_defs(resources: dict[str, object] | None = None) -> dg.Definitions:
    resources = resources if resources is not None else resources_for()
    production = deployment_name() == "production"
    jobs = [minute_tables_job, prune_minute_partitions_job]
    schedules = [retention_schedule(running=production)]
    if "dune" in resources:  # configured by DUNE_API_KEY
        jobs.append(dune_upload_job)
        schedules.append(dune_schedule(running=production))
    return dg.Definitions(
        assets=[minute_file_tables],
        # Every job here is one step: a process of its own for it would only add its start-up
        # (seconds per run, the larger part of a sensor run's latency).
        executor=dg.in_process_executor,
        jobs=jobs,
        sensors=[minute_file_sensor],
        schedules=schedules,
        resources=resources,
    )


defs = build_defs()
