"""DuckDB, the embedded SQL warehouse: each table is loaded from the published JSONL exports.

A load replaces exactly the run's minute files in one transaction (delete their rows, insert the
new ones), so a re-run never duplicates a row and a reader never sees a minute half-replaced.
DuckDB allows one writer per database file; the assets take the `duckdb` pool (limit 1, see
dagster.yaml), and the connection itself retries while another process holds the lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..core import schema

DUCKDB_TYPES = schema.DUCKDB_TYPES


class SchemaDrift(RuntimeError):
    """A warehouse table whose columns no longer match schema/<table>.json."""


def create_table_sql(table: str) -> str:
    cols = ",\n  ".join(
        f'"{c.name}" {DUCKDB_TYPES[c.type]}' + (" NOT NULL" if c.required else "") for c in schema.columns(table)
    )
    return f"CREATE TABLE IF NOT EXISTS {table} (\n  {cols}\n)"


def ensure_table(conn, table: str) -> None:
    conn.execute(create_table_sql(table))
    actual = [(name, dtype) for name, dtype in conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
        [table],
    ).fetchall()]
    expected = [(c.name, DUCKDB_TYPES[c.type]) for c in schema.columns(table)]
    if actual != expected:
        raise SchemaDrift(
            f"DuckDB table {table} has columns {actual}, but schema/{table}.json says {expected}. "
            f"Migrate or drop the table (DROP TABLE {table}) and re-materialize its partitions."
        )


def read_json_sql(table: str) -> str:
    names = ", ".join(f'"{n}"' for n in schema.column_names(table))
    return f"SELECT {names} FROM {schema.duckdb_read_json(table, '?')}"


def replace_minute_files(conn, table: str, minute_files: Sequence[str], paths: Sequence[Path]) -> int:
    """Replace the rows of `minute_files` in `table` with the rows of the JSONL `paths`. Returns rows inserted."""
    ensure_table(conn, table)
    nonempty = [str(p) for p in paths if p.stat().st_size > 0]
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute(f"DELETE FROM {table} WHERE minute_file IN (SELECT unnest(?::VARCHAR[]))", [list(minute_files)])
        inserted = 0
        if nonempty:
            inserted = conn.execute(f"INSERT INTO {table} {read_json_sql(table)}", [nonempty]).fetchone()[0]
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return inserted
