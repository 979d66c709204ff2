"""raw_log and the table assets: one step reads each minute file once and feeds every table.

`raw_log` records what each minute file held (size, lines, lines per msg_type, first and last
time, sha256). The 11 tables and `rejected_lines` are derived from it in the same pass: the core
streams each file's rows into per-table staging files, and the table IO manager publishes them.
The step handles one minute file or a whole range of them (single-run backfills) the same way.
"""

import time
from collections.abc import Iterator

import dagster as dg

from .._dagster_compat import add_partition_metadata, batch_event_writes
from ..core import schema
from ..core.minute_files import locate
from ..core.parallel import MinuteFileJob, stage_minute_files
from ..core.payloads import msg_type_names
from ..core.staging import StagedRun, StagedTable, discard, sweep_stale
from ..core.transform import MinuteFileSummary
from ..sinks.writes import WarehouseWriteError
from .checks import CHECK_SPECS, check_results
from .partitions import backfill_policy, minute_files
from .settings import JamSettings

RAW_LOG = schema.RAW_LOG
GROUPS = {RAW_LOG: "raw", schema.REJECTED: "rejected", **{t: "tables" for t in schema.TABLES}}
POOL = "jam_warehouse"
_PROGRESS_SECONDS = 10.0
OWNERS = ["team:jam-telemetry"]
# A table follows raw_log: when raw_log alone is materialized for some minute files (the UI's
# Assets > raw_log > Materialize), the tables of those minute files are requested too. Runs that
# materialize raw_log and the tables together (the sensor's, a full backfill) do not count as an
# update to follow (`any_deps_updated` ignores a parent updated by a run that also planned this asset).
TABLES_FOLLOW_RAW_LOG = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("follows raw_log")
RETRY_POLICY = dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def _description(table: str) -> str:
    cols = schema.columns(table)
    if table == schema.REJECTED:
        return "Every line that gave no row, with its reason and the original bytes (FORMAT.md 4.3)."
    return f"{table}: " + _TABLE_SOURCES[table] + f" {len(cols)} columns (schema/{table}.json)."


_TABLE_SOURCES = {
    "blocks": "one row per block (msg_type 128).",
    "validatorstatistics": "one row per validator record of each statistics message (msg_type 13).",
    "corestatistics": "one row per core record of each statistics message (msg_type 13).",
    "servicestatistics": "one row per service record of each statistics message (msg_type 13).",
    "workreports": "one row per work report (msg_type 255).",
    "preimages": "one row per preimage (msg_type 142); preimage_hash is BLAKE2b-256 of the blob.",
    "assurances": "one row per assurance (msg_type 141).",
    "tickets": "one row per ticket (msg_type 131).",
    "workpackages": "one row per work-package bundle (msg_type 133, or 0 in old docs).",
    "services": "one row per new service (msg_type 143).",
    "segments": "one row per exported-segments message (msg_type 135, or 3 in old docs).",
}


def column_schema(table: str) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                c.name,
                c.type,
                description=c.description,
                constraints=dg.TableColumnConstraints(nullable=not c.required),
            )
            for c in schema.columns(table)
        ]
    )


def raw_log_metadata(summary: MinuteFileSummary) -> dict[str, object]:
    return {
        "path": dg.MetadataValue.path(summary.path),
        "bytes": summary.bytes,
        "lines": summary.lines,
        "lines_with_rows": summary.lines_with_rows,
        "rejected_lines": summary.rejected,
        "lines_by_msg_type": dg.MetadataValue.json(msg_type_names(summary.lines_by_msg_type)),
        "first_time": summary.first_time or "",
        "last_time": summary.last_time or "",
        "sha256": summary.sha256,
    }


_OUTS = {
    RAW_LOG: dg.AssetOut(
        dagster_type=dg.Nothing,
        is_required=False,
        group_name=GROUPS[RAW_LOG],
        description="One JAM telemetry minute file (YYYY/MM/DD/HHMM.log) as the receiver wrote it: its bytes, "
        "lines, lines per msg_type, first and last time and sha256.",
        kinds={"file"},
        owners=OWNERS,
    ),
    **{
        t: dg.AssetOut(
            io_manager_key="table_io_manager",
            is_required=False,
            group_name=GROUPS[t],
            description=_description(t),
            metadata={"dagster/column_schema": column_schema(t), "schema_file": f"schema/{t}.json"},
            kinds={"jsonl"},  # and the warehouse's, added per deployment (definitions.py)
            automation_condition=TABLES_FOLLOW_RAW_LOG,
            owners=OWNERS,
        )
        for t in schema.ALL_TABLES
    },
}


def selected_names(context: dg.AssetExecutionContext) -> set[str]:
    return {k.path[-1] for k in context.selected_asset_keys}


def run_minute_files(context: dg.AssetExecutionContext) -> list[str]:
    """The run's minute files: its partition or range; for a run of checks alone launched without a
    partition (the UI's "Execute all" on a table's Checks tab), the newest minute file processed."""
    if context.has_partition_key or context.has_partition_key_range:
        return list(context.partition_keys)
    materialized = context.instance.get_materialized_partitions(dg.AssetKey(RAW_LOG))
    if not materialized:
        raise dg.Failure(description="no minute file has been processed yet: there is nothing to check")
    newest = max(materialized)  # keys sort by time
    context.log.info(
        f"no minute file was chosen: checking the newest one processed, {newest} "
        "(to check another, re-materialize it: Assets > raw_log > Materialize)"
    )
    return [newest]


def derive_minute_files(
    context: dg.AssetExecutionContext, settings: JamSettings, tables: list[str]
) -> tuple[dict[str, StagedTable], dict[str, MinuteFileSummary]]:
    """Read each minute file of the run once, staging the rows of `tables`."""
    keys = run_minute_files(context)
    staged = StagedRun.of(tables).tables
    summaries: dict[str, MinuteFileSummary] = {}
    stage_root = settings.staging_dir(context.run_id)
    log_root = settings.log_root
    jobs = []
    for key in keys:
        path = locate(log_root, key)
        if path is None:
            context.log.warning(f"minute file {key} is no longer under {log_root}; its outputs are left as they were")
            continue
        jobs.append(MinuteFileJob(path, key, stage_root / key))
    started = last_report = time.monotonic()
    staging = stage_minute_files(jobs, tables, settings.team_aliases, settings.core_workers or None)
    for done, (job, summary, files) in enumerate(staging, 1):
        key = job.minute_file
        summary.path = str(job.path)
        summaries[key] = summary
        for t in tables:
            staged[t].add(key, files[t], summary.rows_by_table.get(t, 0))
        now = time.monotonic()
        if len(jobs) > 1 and (now - last_report >= _PROGRESS_SECONDS or done == len(jobs)):
            last_report = now
            context.log.info(f"read {done}/{len(jobs)} minute files ({done / len(jobs):.0%}) in {now - started:.1f}s")
    return staged, summaries


def written_first(context: dg.AssetExecutionContext, tables: list[str], staged: dict[str, StagedTable]) -> list[str]:
    """Writes the step's tables (their IO manager's one write for all), then orders them: those the
    warehouse took first, so each is recorded as materialized; a failed table, yielded after them,
    fails the step (and is retried) without hiding what the others hold."""
    if not tables:
        return []
    outcomes = context.resources.table_io_manager.write_run(context, staged[tables[0]].run)
    return sorted(tables, key=lambda t: isinstance(outcomes[t], WarehouseWriteError))


@dg.multi_asset(
    name="minute_file_tables",
    outs=_OUTS,
    internal_asset_deps={RAW_LOG: set(), **{t: {dg.AssetKey(RAW_LOG)} for t in schema.ALL_TABLES}},
    partitions_def=minute_files,
    backfill_policy=backfill_policy,
    can_subset=True,
    check_specs=CHECK_SPECS,
    pool=POOL,
    # A failed warehouse write (BigQuery busy, a lost connection) is retried by Dagster too, after the
    # writer's own retries; a run that still fails is requested again by the sensor.
    retry_policy=RETRY_POLICY,
)
def minute_file_tables(
    context: dg.AssetExecutionContext, settings: JamSettings
) -> Iterator[dg.Output | dg.AssetCheckResult | dg.AssetCheckEvaluation]:
    batch_event_writes()
    selected = selected_names(context)
    tables = [t for t in schema.ALL_TABLES if t in selected]
    sweep_stale(settings.staging_dir(context.run_id).parent)
    try:
        # With only checks selected (a re-run from the UI), this re-reads the files and stages nothing.
        staged, summaries = derive_minute_files(context, settings, tables)
        if RAW_LOG in selected:
            # An output with per-partition metadata, not one logged event per minute file: Dagster
            # then writes a range run's raw_log events in batches, like the tables'.
            add_partition_metadata(context, RAW_LOG, {k: raw_log_metadata(s) for k, s in summaries.items()})
            yield dg.Output(None, output_name=RAW_LOG)
        for t in written_first(context, tables, staged):
            add_partition_metadata(context, t, {k: {"rows": n} for k, n in staged[t].rows.items()})
            yield dg.Output(staged[t], output_name=t)
        yield from check_results(context, settings, summaries)
    finally:
        discard(settings.staging_dir(context.run_id))


# Evaluates TABLES_FOLLOW_RAW_LOG (running by default, like the minute-file sensor).
table_automation = dg.AutomationConditionSensorDefinition(
    "tables_follow_raw_log",
    target=dg.AssetSelection.assets(*schema.ALL_TABLES),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Requests the tables of the minute files whose raw_log was materialized without them "
    "(Assets > raw_log > Materialize).",
)
