"""The code location: `dagster dev` (via workspace.yaml) and `jam-etl` load `defs` from here."""

from __future__ import annotations

import dagster as dg

from .defs.assets import minute_file_tables
from .defs.jobs import minute_tables_job
from .defs.resources import deployment_name, resources_for
from .defs.retention import prune_minute_partitions_job, retention_schedule
from .defs.sensors import minute_file_sensor


def build_defs(resources: dict[str, object] | None = None) -> dg.Definitions:
    return dg.Definitions(
        assets=[minute_file_tables],
        jobs=[minute_tables_job, prune_minute_partitions_job],
        sensors=[minute_file_sensor],
        schedules=[retention_schedule(running=deployment_name() == "production")],
        resources=resources if resources is not None else resources_for(),
    )


defs = build_defs()
