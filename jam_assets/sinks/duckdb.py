"""DuckDB, the embedded warehouse: a run's minute files replace their rows in every table at once.

One transaction per run: for each table, delete the rows of the run's minute files and insert the
staged rows (read with the schema's types, never inferred). A reader sees every table before the
run or every table after it, never a minute half-replaced or a table ahead of another, and a re-run
changes nothing. DuckDB allows one writer per database file: the table step holds the
`jam_warehouse` pool (limit 1, dagster.yaml), and Dagster's DuckDB connection retries while another
process holds the lock.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from ..core import schema
from .writes import Batches, SchemaDrift, TableWrite

DUCKDB_TYPES = schema.DUCKDB_TYPES


def create_table_sql(table: str) -> str:
    cols = ",\n  ".join(
        f'"{c.name}" {DUCKDB_TYPES[c.type]}' + (" NOT NULL" if c.required else "") for c in schema.columns(table)
    )
    return f"CREATE TABLE IF NOT EXISTS {table} (\n  {cols}\n)"


def ensure_table(conn, table: str) -> None:
    """Create the table from schema/<table>.json if it is missing; stop if an existing one differs."""
    conn.execute(create_table_sql(table))
    actual = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
        [table],
    ).fetchall()
    expected = [(c.name, DUCKDB_TYPES[c.type]) for c in schema.columns(table)]
    if [tuple(r) for r in actual] != expected:
        raise SchemaDrift(
            f"DuckDB table {table} has columns {[tuple(r) for r in actual]}, but schema/{table}.json says {expected}. "
            f'Drop it (jam-etl sql is read-only: use duckdb <file> "DROP TABLE {table}") and re-run its minute files '
            "(jam-etl run): the exports are rebuilt from the minute files too."
        )


def read_json_sql(table: str) -> str:
    names = ", ".join(f'"{n}"' for n in schema.column_names(table))
    return f"SELECT {names} FROM {schema.duckdb_read_json(table, '?')}"


def _replace(conn, table: str, minute_files: Sequence[str], paths: Sequence[str]) -> int:
    conn.execute(f"DELETE FROM {table} WHERE minute_file IN (SELECT unnest(?::VARCHAR[]))", [list(minute_files)])
    if not paths:
        return 0
    return conn.execute(f"INSERT INTO {table} {read_json_sql(table)}", [list(paths)]).fetchone()[0]


def replace_minute_files(conn, batches: Batches) -> dict[str, TableWrite]:
    """Replace, in one transaction, each table's rows of the batch's minute files with the staged rows."""
    for table in batches:
        ensure_table(conn, table)
    writes: dict[str, TableWrite] = {}
    conn.execute("BEGIN TRANSACTION")
    try:
        for table, files in batches.items():
            started = time.monotonic()
            nonempty = [str(p) for p in files.values() if p.stat().st_size > 0]
            rows = _replace(conn, table, list(files), nonempty)
            total = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            writes[table] = TableWrite(table, rows, time.monotonic() - started, table_rows=total)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return writes


def replace_days(conn, table: str, rows_by_day: Mapping[str, Sequence[Mapping[str, object]]]) -> TableWrite:
    """Replace, in one transaction, the rows of these days of a per-day table (leaderboard, quality_report)."""
    import pandas as pd

    started = time.monotonic()
    ensure_table(conn, table)
    names = schema.column_names(table)
    # object columns keep Python ints exact (a float column would round values beyond 2^53)
    frame = pd.DataFrame(
        [[row[n] for n in names] for day in sorted(rows_by_day) for row in rows_by_day[day]],
        columns=pd.Index(names),
        dtype=object,
    )
    casts = ", ".join(f'CAST("{c.name}" AS {DUCKDB_TYPES[c.type]})' for c in schema.columns(table))
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute(
            f"DELETE FROM {table} WHERE day IN (SELECT CAST(unnest(?::VARCHAR[]) AS DATE))", [sorted(rows_by_day)]
        )
        if len(frame):
            conn.register("_day_rows", frame)
            conn.execute(f"INSERT INTO {table} SELECT {casts} FROM _day_rows")
            conn.unregister("_day_rows")
        total = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return TableWrite(table, len(frame), time.monotonic() - started, table_rows=total)


def read_minute_files(conn, table: str, minute_files: Sequence[str]):
    """The table's rows of these minute files as a pandas DataFrame, in schema order (empty if none)."""
    ensure_table(conn, table)
    names = ", ".join(f'"{n}"' for n in schema.column_names(table))
    return conn.execute(
        f"SELECT {names} FROM {table} WHERE minute_file IN (SELECT unnest(?::VARCHAR[])) ORDER BY minute_file, line_no",
        [list(minute_files)],
    ).df()
