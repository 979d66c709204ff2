"""Where table outputs go: JSONL exports always (the Dune files), plus a SQL warehouse.

- `TableExportsIOManager`: `<export root>/<table>/YYYY/MM/DD/HHMM.jsonl`, one file per table per
  minute file, published atomically and replaced (never appended) on re-materialization.
- `DuckDBTablesIOManager`: the exports, then the same minute files replaced in DuckDB.
- `BigQueryTablesIOManager` (production, `io_bigquery.py`): the exports, then BigQuery.

Range runs are handled like single partitions: one file per minute file, one warehouse load for
the whole range.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from ..core.staging import StagedTable, export_path, publish
from .settings import JamSettings
from .warehouse_duckdb import replace_minute_files

def partition_keys(context: dg.OutputContext | dg.InputContext) -> list[str]:
    # In range runs Dagster hands the keys over in no particular order.
    return sorted(context.asset_partition_keys) if context.has_asset_partitions else []


class TableExportsIOManager(dg.ConfigurableIOManager):
    """Publishes each table's staged rows as JSONL, one file per minute file."""

    settings: JamSettings

    def handle_output(self, context: dg.OutputContext, obj: StagedTable) -> None:
        table = context.asset_key.path[-1]
        root = self.settings.export_root
        published: dict[str, Path] = {}
        for key in partition_keys(context):
            staged = obj.files.get(key)
            if staged is None:
                context.log.warning(f"{table}: nothing staged for minute file {key}; its exports are left as they were")
                continue
            final = export_path(root, table, key)
            publish(staged, final)
            published[key] = final
        # Each minute file's own dagster/row_count is set by the asset, per partition; these
        # describe the run's whole write.
        metadata: dict[str, object] = {
            "rows_in_run": sum(obj.rows.get(k, 0) for k in published),
            "minute_files_in_run": len(published),
            "export_root": dg.MetadataValue.path(str(root / table)),
        }
        metadata.update(self.load_warehouse(context, table, published))
        context.add_output_metadata(metadata)

    def load_warehouse(self, context: dg.OutputContext, table: str, published: dict[str, Path]) -> dict[str, object]:
        return {}

    def load_input(self, context: dg.InputContext) -> dict[str, Path]:
        """The export files of the requested minute files, for downstream readers."""
        table = context.asset_key.path[-1]
        root = self.settings.export_root
        return {k: p for k in partition_keys(context) if (p := export_path(root, table, k)).exists()}


class DuckDBTablesIOManager(TableExportsIOManager):
    """JSONL exports, then the same minute files replaced in the embedded DuckDB warehouse."""

    duckdb: DuckDBResource

    def load_warehouse(self, context: dg.OutputContext, table: str, published: dict[str, Path]) -> dict[str, object]:
        if not published:
            return {}
        with self.duckdb.get_connection() as conn:
            inserted = replace_minute_files(conn, table, list(published), list(published.values()))
        return {"duckdb_rows_in_run": inserted, "duckdb_table": f"{self.duckdb.database}:{table}"}
