"""The code location: `dagster dev` (via workspace.yaml) and `jam-etl` load `defs` from here."""

from __future__ import annotations

import dagster as dg

from .defs.assets import minute_file_tables
from .defs.dune import dune_schedule, dune_upload_job
from .defs.jobs import minute_tables_job
from .defs.resources import deployment_name, resources_for
from .defs.retention import prune_minute_partitions_job, retention_schedule
from .defs.sensors import minute_file_sensor


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
        jobs=jobs,
        sensors=[minute_file_sensor],
        schedules=schedules,
        resources=resources,
    )


defs = build_defs()
