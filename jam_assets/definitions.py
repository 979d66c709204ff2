"""The code location: `dagster dev`/`dg dev` (via workspace.yaml or [tool.dg]) and `jam-etl` load it from here.

Loading it has no side effects: the environment is read (once, by `resources_for`), nothing is
written and nothing is set.
"""

from __future__ import annotations

import warnings
from datetime import timedelta

import dagster as dg

from .core import schema
from .defs.alerts import alert_on_run_failure
from .defs.assets import minute_file_tables, table_automation
from .defs.dune import dune_schedule, dune_upload_job
from .defs.jobs import minute_tables_job
from .defs.reports import daily_reports, daily_reports_job, daily_reports_sensor
from .defs.resources import deployment_name, resources_for
from .defs.retention import prune_minute_partitions_job, retention_schedule
from .defs.sensors import minute_file_sensor
from .defs.settings import Env

# In production a table with no new minute file for this long shows as stale (the receiver or
# the sensor stopped); warn half-way.
FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(minutes=15), warn_window=timedelta(minutes=5))


def _per_deployment(production: bool):
    warehouse = "bigquery" if production else "duckdb"

    def spec(s: dg.AssetSpec) -> dg.AssetSpec:
        name = s.key.path[-1]
        if name in schema.DAY_TABLES:  # the leaderboard and the quality report go to the warehouse too
            return s.replace_attributes(kinds={*s.kinds, warehouse})
        if name not in schema.ALL_TABLES:
            return s
        s = s.replace_attributes(kinds={*s.kinds, warehouse})
        return dg.apply_freshness_policy(s, FRESHNESS) if production else s

    return spec


def build_defs(resources: dict[str, object] | None = None, env: Env | None = None) -> dg.Definitions:
    env = env or Env()
    production = deployment_name(env) == "production"
    resources = resources if resources is not None else resources_for(env=env)
    jobs = [minute_tables_job, daily_reports_job, prune_minute_partitions_job]
    schedules = [retention_schedule(running=production)]
    sensors = [minute_file_sensor, table_automation, daily_reports_sensor]
    if "dune" in resources:  # configured by DUNE_API_KEY
        jobs.append(dune_upload_job)
        schedules.append(dune_schedule(running=production))
    if "alerts" in resources:  # configured by JAM_ALERT_WEBHOOK
        sensors.append(alert_on_run_failure)
    with warnings.catch_warnings():  # source code references are a beta API in Dagster 1.13
        warnings.simplefilter("ignore", dg.BetaWarning)
        assets = dg.with_source_code_references([minute_file_tables, daily_reports])
    definitions = dg.Definitions(
        # Each asset links to its definition in the source (the UI's "code references").
        assets=assets,
        # Every job here is one step: a process of its own for it would only add its start-up
        # (seconds per run, the larger part of a sensor run's latency).
        executor=dg.in_process_executor,
        jobs=jobs,
        sensors=sensors,
        schedules=schedules,
        resources=resources,
    )
    with warnings.catch_warnings():  # map_asset_specs is a preview API in Dagster 1.13
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return definitions.map_asset_specs(func=_per_deployment(production))


@dg.definitions
def defs() -> dg.Definitions:
    return build_defs()
