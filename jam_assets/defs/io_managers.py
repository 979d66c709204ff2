"""Where table outputs go: the warehouse first, then the JSONL exports (the Dune files).

`TablesIOManager.handle_output` takes one table's staged rows of a run. The first table's call
writes every staged table of the step to the warehouse side by side (DuckDB: one transaction;
BigQuery: one load and one MERGE per table, concurrently, on one client), then publishes the
exports of each table the warehouse now holds; every call then reports its own table. So a table's
exports (and so Dune, which uploads them) change only once its warehouse rows have: a table whose
warehouse write failed keeps its previous exports, and its output fails the step, which is retried
(RetryPolicy), then requested again by the sensor. Every table's output, materialized or failed,
carries `targets` (which of the exports, the warehouse and Dune hold this run's rows of its minute
files, which the rows from before) and `run_tables` (the step's tables written and not written), so
the UI says what a half-failed run left where.

Exports are `<export root>/<table>/YYYY/MM/DD/HHMM.jsonl`, one file per table per minute file,
published with an atomic rename and replaced (never appended) on re-materialization.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import dagster as dg
import orjson

from ..core.staging import StagedRun, StagedTable, export_path, publish
from ..sinks.writes import TableWrite, WarehouseWriteError
from .settings import JamSettings
from .warehouses import Outcomes, Warehouse


def partition_keys(context: dg.OutputContext | dg.InputContext) -> list[str]:
    # In range runs Dagster hands the keys over in no particular order.
    return sorted(context.asset_partition_keys) if context.has_asset_partitions else []


THIS_RUN = "this run's rows"
BEFORE = "the rows from before this run"


def targets(warehouse: str, written: bool, dune: bool) -> dict[str, str]:
    """Which target holds what for one table of a run: the step writes the warehouse, then publishes the
    exports of the tables it holds; Dune uploads published exports on its hourly schedule."""
    if not written:
        held = {"exports": BEFORE, warehouse: f"{BEFORE} (its write failed)"}
        return held | ({"dune": BEFORE} if dune else {})
    held = {"exports": THIS_RUN, warehouse: THIS_RUN}
    return held | ({"dune": f"{BEFORE} until the next hourly upload (dune_upload_job)"} if dune else {})


def run_tables(outcomes: Outcomes) -> dict[str, list[str]]:
    written = sorted(t for t, o in outcomes.items() if isinstance(o, TableWrite))
    return {"written": written, "not_written": sorted(t for t in outcomes if t not in written)}


def _had_rows(root: Path, table: str, minute_files: list[str], materialized: Callable[[], set[str]]) -> bool:
    """Whether the warehouse may hold rows of these minutes. The published exports say what it holds;
    where a minute's export is missing (pruned by retention, a new export folder, a crash before
    publishing) a minute processed before may have rows there. A table that gets no rows skips its
    DELETE only when neither is the case (a new minute, the usual live run)."""
    for key in minute_files:
        path = export_path(root, table, key)
        if path.exists():
            if path.stat().st_size > 0:
                return True
        elif key in materialized():
            return True
    return False


class TablesIOManager(dg.ConfigurableIOManager):
    """A table's minute files: the warehouse, then the JSONL exports."""

    settings: JamSettings
    warehouse: Warehouse
    # Whether Dune uploads the exports (production with DUNE_API_KEY): said in each output's `targets`.
    dune: bool = False

    def write_run(self, context: dg.OutputContext | dg.AssetExecutionContext, run: StagedRun) -> Outcomes:
        """Writes every staged table of the step, once; each table's output then reports its own outcome.

        The asset calls it before yielding any table, so it can yield the tables the warehouse took
        first: a failed table then fails the step only after the others were recorded as materialized.
        """
        if run.outcome is None:
            instance = context.step_context.instance if isinstance(context, dg.OutputContext) else context.instance
            run.outcome = dict(self._write_run(context.log, context.run_id, instance, run))
        return cast(Outcomes, run.outcome)

    def _write_run(self, log, run_id: str, instance: dg.DagsterInstance, run: StagedRun) -> Outcomes:
        root = self.settings.export_root
        batches = {t: dict(staged.files) for t, staged in run.tables.items()}
        had_rows = {
            t: _had_rows(
                root, t, list(files), functools.cache(lambda t=t: instance.get_materialized_partitions(dg.AssetKey(t)))
            )
            for t, files in batches.items()
        }
        work_dir = self.settings.staging_dir(run_id) / "warehouse"
        try:
            outcomes = self.warehouse.replace_minute_files(log, run_id, work_dir, batches, had_rows)
        except Exception as exc:  # the whole write failed: nothing changed anywhere
            transient = self.warehouse.is_transient(exc)
            outcomes = {t: WarehouseWriteError(t, f"{self.warehouse.name}: {exc}", transient) for t in batches}
        for table, outcome in outcomes.items():
            if isinstance(outcome, TableWrite):
                for key, staged in batches[table].items():
                    publish(staged, export_path(root, table, key))
        tables = run_tables(outcomes)
        if tables["not_written"]:
            log.error(
                f"{self.warehouse.name} and the exports now hold this run's rows for: "
                f"{', '.join(tables['written']) or 'no table'}; they still hold the previous rows for: "
                f"{', '.join(tables['not_written'])}"
            )
        return outcomes

    def handle_output(self, context: dg.OutputContext, obj: StagedTable) -> None:
        table = context.asset_key.path[-1]
        outcomes = self.write_run(context, obj.run)
        outcome = outcomes[table]
        held = {
            "targets": dg.MetadataValue.json(targets(self.warehouse.name, isinstance(outcome, TableWrite), self.dune)),
            "run_tables": dg.MetadataValue.json(run_tables(outcomes)),
        }
        if isinstance(outcome, WarehouseWriteError):
            # A transient failure is retried by the step's RetryPolicy; no retry fixes a drifted schema or
            # a statement over its byte limit, so those fail at once.
            raise dg.Failure(description=str(outcome), metadata=held, allow_retries=outcome.transient) from outcome
        missing = [k for k in partition_keys(context) if k not in obj.files]
        for key in missing:
            context.log.warning(f"{table}: nothing staged for minute file {key}; its outputs are left as they were")
        # Each minute file's own `rows` is set by the asset, per partition. What is set here goes on
        # every minute file of the run: the table's rows after it (the asset page's row count), and
        # the run's write as one JSON value, not as numbers a plot would draw flat across a range.
        metadata: dict[str, Any] = {
            **held,
            "export_root": dg.MetadataValue.path(str(self.settings.export_root / table)),
            "warehouse": self.warehouse.name,
            "warehouse_write": dg.MetadataValue.json(
                {
                    "minute_files": len(obj.files),
                    "rows": outcome.rows,
                    "seconds": round(outcome.seconds, 3),
                    **outcome.metadata,
                }
            ),
        }
        if outcome.table_rows is not None:
            metadata["dagster/row_count"] = outcome.table_rows
        table_name = outcome.metadata.get("bigquery_table") or outcome.metadata.get("dagster/table_name")
        if table_name:
            metadata["dagster/table_name"] = table_name
        context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext):
        """The table's rows of the requested minute files, read back from the warehouse (a pandas
        DataFrame in schema order: a DuckDB query locally, a BigQuery query pruned on minute_start in
        production), for assets downstream of a table."""
        return self.warehouse.read_minute_files(context.asset_key.path[-1], partition_keys(context))


def day_export_path(export_root: Path, table: str, day: str) -> Path:
    """`<export root>/<table>/YYYY/MM/DD.jsonl`: one file per day of a per-day table."""
    return export_root / table / f"{day.replace('-', '/')}.jsonl"


class DayTablesIOManager(dg.ConfigurableIOManager):
    """A per-day table (leaderboard, quality_report): each day's rows replace that day in the warehouse,
    then in its export file, published with an atomic rename."""

    settings: JamSettings
    warehouse: Warehouse

    def handle_output(self, context: dg.OutputContext, obj: dict[str, list[dict]]) -> None:
        table = context.asset_key.path[-1]
        root = self.settings.export_root
        work_dir = self.settings.staging_dir(context.run_id) / table
        write = self.warehouse.replace_days(context.log, context.run_id, work_dir, table, obj)
        for day, rows in obj.items():
            staged = work_dir / f"{day}.jsonl"
            staged.parent.mkdir(parents=True, exist_ok=True)
            staged.write_bytes(b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in rows))
            publish(staged, day_export_path(root, table, day))
        metadata: dict[str, Any] = {
            "export_root": dg.MetadataValue.path(str(root / table)),
            "warehouse": self.warehouse.name,
            "warehouse_write": dg.MetadataValue.json({"days": len(obj), "rows": write.rows, **write.metadata}),
        }
        if write.table_rows is not None:
            metadata["dagster/row_count"] = write.table_rows
        context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext) -> dict[str, list[dict]]:
        """The exported rows of the requested days."""
        table = context.asset_key.path[-1]
        out = {}
        for day in partition_keys(context):
            path = day_export_path(self.settings.export_root, table, day)
            out[day] = [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []
        return out
