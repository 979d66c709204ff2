"""The leaderboard and the quality report of UTC days, as SQL that DuckDB and BigQuery run alike.

One statement computes any number of days (a year in one call is one statement), grouped by day.
Each reads only those days' rows: its filter is a union of `minute_start` ranges, one per run of
consecutive days (`minute_start >= day AND minute_start < day + 1`), so BigQuery prunes partitions
and DuckDB skips row groups by their zone maps. Every source table is read once per statement.

Nearest-rank percentiles (PERCENTILE_DISC): the p-th percentile of n sorted values is the value at
1-based position ceil(p·n). Neither engine's quantile function is trusted (DuckDB's `median`
interpolates, BigQuery's APPROX_QUANTILES approximates): the SQL numbers the values with
ROW_NUMBER() and picks the one at that position, computed in integers as (pct·n + 99) DIV 100 so
no floating point decides a position.

Flags (leaderboard.flag): `unit_suspect` when the team's median lies outside the [low, high] band
of the table's `elapsed_units` check (quality.DEFAULT_ELAPSED_BANDS), else `too_few_values` below
`min_values`. unit_suspect wins when both apply: a median of 40,000,000,000 µs for a block says
"nanoseconds" however few values carry it, and that is what the team must fix; `values` still
shows how few there were. Flagged teams are listed, never ranked.

Quality report: per (day, team, table, check), judged per line (a statistics line's records share
the line's envelope, so they count once, as in quality.py):
- elapsed_units: quality.py's per-line rule (above ns_above, or positive and below ms_below; for
  the zero-for-now tables any non-zero value). ERROR when the team's nearest-rank median lies
  outside [low, high] (the same median and band as the leaderboard's unit_suspect), else WARN.
- hex_formats: any non-null column of quality.hex_patterns not matching its pattern. ERROR.
- time_in_window: `time` before its minute or after its end by more than the tolerance. WARN.
The sample is the first failing line by (minute_file, line_no): found in the same single pass by
taking the MIN of `minute_file || zero-padded line_no || value` (minute_file is always
`YYYY/MM/DD/HHMM`, 15 characters), which both engines order by bytes.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
from google.cloud import bigquery

from ..core import schema
from ..core.quality import DEFAULT_ELAPSED_BANDS, ElapsedBand, QualityBounds, hex_patterns
from ..sinks.bigquery import BigQueryTarget

DEFAULT_MIN_VALUES = 10
# Output column -> percentile in percent: integers keep the position exact.
PERCENTILES = {"median_us": 50, "p90_us": 90}
SAMPLE_CHARS = 80  # as quality.py's samples
_LINE_NO_DIGITS = 12
_MINUTE_FILE_CHARS = len("YYYY/MM/DD/HHMM")
# Tables where one line gives several rows; their line-level columns are judged once per line.
_MULTI_ROW_TABLES = ("validatorstatistics", "corestatistics", "servicestatistics")
CHECKS = ("elapsed_units", "hex_formats", "time_in_window")


@dataclass(frozen=True)
class Metric:
    name: str
    table: str
    timed: bool  # timed: percentiles of `elapsed`; else: rows counted, timings null


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("block_author", "blocks", True),
        Metric("refine", "workreports", True),
        Metric("assurance", "assurances", True),
        Metric("ticket", "tickets", True),
        Metric("blocks", "blocks", False),
        Metric("work_reports", "workreports", False),
        Metric("assurances", "assurances", False),
        Metric("tickets", "tickets", False),
        Metric("preimages", "preimages", False),
    )
}
TIMED_METRICS = tuple(m.name for m in METRICS.values() if m.timed)
METRIC_TABLES = tuple(dict.fromkeys(m.table for m in METRICS.values()))


# ------------------------------------------------------------------------------------------------
# Dialects: only what differs between DuckDB and GoogleSQL
# ------------------------------------------------------------------------------------------------


class Dialect(abc.ABC):
    """What differs between the two SQL dialects; everything else in the statements is common SQL."""

    int_type: str
    string_type: str

    @abc.abstractmethod
    def q(self, name: str) -> str:
        """A quoted identifier."""

    @abc.abstractmethod
    def day(self, column: str) -> str:
        """The UTC date of a TIMESTAMP column."""

    @abc.abstractmethod
    def timestamp(self, day: date) -> str:
        """The TIMESTAMP literal of a day's first microsecond, UTC."""

    @abc.abstractmethod
    def div(self, a: str, b: str) -> str:
        """Integer division, rounding down (the operands are never negative)."""

    @abc.abstractmethod
    def full_match(self, column: str, pattern: str) -> str:
        """Whether the whole value matches an RE2 pattern."""

    @abc.abstractmethod
    def shift(self, column: str, microseconds: int) -> str:
        """A TIMESTAMP column moved by some microseconds."""

    @abc.abstractmethod
    def iso_time(self, column: str) -> str:
        """A TIMESTAMP as the exports write it: 2025-04-23T06:00:06.285625Z."""


class DuckDBDialect(Dialect):
    int_type = "BIGINT"
    string_type = "VARCHAR"

    def q(self, name: str) -> str:
        return f'"{name}"'

    def day(self, column: str) -> str:
        return f"CAST({column} AS DATE)"

    def timestamp(self, day: date) -> str:
        return f"TIMESTAMP '{day.isoformat()} 00:00:00'"  # minute_start is a UTC TIMESTAMP without zone

    def div(self, a: str, b: str) -> str:
        return f"(({a}) // ({b}))"

    def full_match(self, column: str, pattern: str) -> str:
        return f"regexp_full_match({column}, '{pattern}')"

    def shift(self, column: str, microseconds: int) -> str:
        return f"({column} + to_microseconds({microseconds}))"

    def iso_time(self, column: str) -> str:
        return f"strftime({column}, '%Y-%m-%dT%H:%M:%S.%fZ')"


class BigQueryDialect(Dialect):
    int_type = "INT64"
    string_type = "STRING"

    def q(self, name: str) -> str:
        return f"`{name}`"

    def day(self, column: str) -> str:
        return f"DATE({column})"  # UTC

    def timestamp(self, day: date) -> str:
        return f"TIMESTAMP '{day.isoformat()} 00:00:00+00'"

    def div(self, a: str, b: str) -> str:
        # Each argument in its own parentheses: the emulator's SQL translator (sqlglot) drops the
        # grouping of DIV(a + b, c) and computes a + (b DIV c); BigQuery reads both alike.
        return f"DIV(({a}), ({b}))"

    def full_match(self, column: str, pattern: str) -> str:
        return f"REGEXP_CONTAINS({column}, r'^(?:{pattern})$')"

    def shift(self, column: str, microseconds: int) -> str:
        return f"TIMESTAMP_ADD({column}, INTERVAL {microseconds} MICROSECOND)"

    def iso_time(self, column: str) -> str:
        return f"FORMAT_TIMESTAMP('%Y-%m-%dT%H:%M:%E6SZ', {column})"


DUCKDB = DuckDBDialect()
BIGQUERY = BigQueryDialect()


# ------------------------------------------------------------------------------------------------
# Days and the filter that bounds every scan
# ------------------------------------------------------------------------------------------------


def as_days(days: Iterable[date | str]) -> list[date]:
    """Sorted distinct days from dates or `YYYY-MM-DD` strings."""
    out = set()
    for d in days:
        if isinstance(d, str):
            d = date.fromisoformat(d)
        elif not isinstance(d, date):
            raise TypeError(f"a day is a date or a YYYY-MM-DD string, not {d!r}")
        out.add(date(d.year, d.month, d.day))  # a datetime's time of day is not part of its day
    return sorted(out)


def day_runs(days: Sequence[date]) -> list[tuple[date, date]]:
    """Consecutive sorted days as half-open [first, last + 1 day) ranges."""
    runs: list[tuple[date, date]] = []
    for d in days:
        if runs and runs[-1][1] == d:
            runs[-1] = (runs[-1][0], d + timedelta(days=1))
        else:
            runs.append((d, d + timedelta(days=1)))
    return runs


def day_filter(d: Dialect, days: Sequence[date]) -> str:
    """`minute_start` within the days: one half-open range per run of consecutive days."""
    if not days:
        raise ValueError("no days to compute")
    ranges = [f"(minute_start >= {d.timestamp(a)} AND minute_start < {d.timestamp(b)})" for a, b in day_runs(days)]
    return "(" + " OR ".join(ranges) + ")"


def _literal_rows(rows: list[dict[str, Any]]) -> str:
    """A constant relation as SELECT ... UNION ALL SELECT ...: GoogleSQL has no VALUES table constructor."""

    def literal(v: Any) -> str:
        return f"'{v}'" if isinstance(v, str) else str(int(v))

    return " UNION ALL ".join("SELECT " + ", ".join(f"{literal(v)} AS {k}" for k, v in r.items()) for r in rows)


# ------------------------------------------------------------------------------------------------
# The leaderboard
# ------------------------------------------------------------------------------------------------


def leaderboard_sql(
    d: Dialect,
    tables: Mapping[str, str],
    days: Sequence[date],
    min_values: int = DEFAULT_MIN_VALUES,
    bands: Mapping[str, ElapsedBand] | None = None,
) -> str:
    """The leaderboard rows of `days` (unordered), from `tables` (table -> SQL reference); the
    metrics of tables missing from it are left out."""
    if type(min_values) is not int or min_values < 1:
        raise ValueError(f"min_values must be a whole number of at least 1, not {min_values!r}")
    bands = DEFAULT_ELAPSED_BANDS if bands is None else bands
    metrics = [m for m in METRICS.values() if m.table in tables]
    timed_tables = {m.table for m in metrics if m.timed}
    sources = [t for t in METRIC_TABLES if t in tables]
    defs = _literal_rows(
        [
            {
                "metric": m.name,
                "source": m.table,
                "timed": m.timed,
                "low": bands[m.table].low if m.timed else 0,
                "high": bands[m.table].high if m.timed else 0,
            }
            for m in metrics
        ]
    )
    where = day_filter(d, days)
    source_rows = " UNION ALL ".join(
        f"SELECT '{t}' AS source, {d.day('minute_start')} AS day, team, "
        f"{'elapsed' if t in timed_tables else f'CAST(NULL AS {d.int_type})'} AS value "
        f"FROM {tables[t]} WHERE {where}"
        for t in sources
    )
    pick = ",\n    ".join(
        f"MAX(CASE WHEN pos = {d.div(f'{pct} * n + 99', '100')} THEN value END) AS {name}"
        for name, pct in PERCENTILES.items()
    )
    cols = ", ".join(["median_us", "p90_us", "min_us", "max_us"])
    timed_only = ", ".join(f"CASE WHEN m.timed = 1 THEN p.{c} END AS {c}" for c in cols.split(", "))
    q = d.q
    return f"""WITH
metric_defs AS ({defs}),
source_rows AS ({source_rows}),
positioned AS (
  SELECT source, day, team, value,
    ROW_NUMBER() OVER (PARTITION BY source, day, team ORDER BY value ASC NULLS LAST) AS pos,
    COUNT(value) OVER (PARTITION BY source, day, team) AS n
  FROM source_rows
),
per_team AS (
  SELECT source, day, team, COUNT(*) AS row_count, COUNT(value) AS value_count,
    {pick},
    MIN(value) AS min_us, MAX(value) AS max_us
  FROM positioned
  GROUP BY source, day, team
),
measured AS (
  SELECT m.metric, m.timed, m.low, m.high, p.day, p.team,
    CASE WHEN m.timed = 1 THEN p.value_count ELSE p.row_count END AS n_values,
    {timed_only}
  FROM per_team p JOIN metric_defs m ON m.source = p.source
),
flagged AS (
  SELECT metric, timed, day, team, n_values, {cols},
    CASE WHEN median_us < low OR median_us > high THEN 'unit_suspect'
         WHEN n_values < {min_values} THEN 'too_few_values' END AS flag
  FROM measured
)
SELECT day AS {q("day")}, team AS {q("team")}, metric AS {q("metric")}, n_values AS {q("values")},
  median_us AS {q("median_us")}, p90_us AS {q("p90_us")}, min_us AS {q("min_us")}, max_us AS {q("max_us")},
  CASE WHEN flag IS NULL THEN RANK() OVER (
    PARTITION BY day, metric, CASE WHEN flag IS NULL THEN 1 ELSE 0 END
    ORDER BY CASE WHEN timed = 1 THEN median_us ELSE -n_values END
  ) END AS {q("rank")},
  flag AS {q("flag")}
FROM flagged"""


def _leaderboard_order(row: dict) -> tuple:
    order = list(METRICS)
    return row["day"], order.index(row["metric"]), row["rank"] is None, row["rank"] or 0, row["team"]


# ------------------------------------------------------------------------------------------------
# The quality report
# ------------------------------------------------------------------------------------------------


def _cut(expr: str) -> str:
    return (
        f"CASE WHEN LENGTH({expr}) > {SAMPLE_CHARS} THEN SUBSTR({expr}, 1, {SAMPLE_CHARS - 3}) || '...' ELSE {expr} END"
    )


def _table_quality_sql(
    d: Dialect, table: str, ref: str, where: str, band: ElapsedBand | None, tolerance_us: int
) -> str:
    """One table's (day, team) aggregates of all three checks, in one pass over its rows."""
    patterns = hex_patterns(table)  # never empty: sender_id is in every table
    wanted = ["minute_file", "line_no", "minute_start", "team", "time", *(["elapsed"] if band else []), *patterns]
    distinct = "DISTINCT " if table in _MULTI_ROW_TABLES else ""
    q = d.q
    key = f"minute_file || LPAD(CAST(line_no AS {d.string_type}), {_LINE_NO_DIGITS}, '0') || "
    bad_hex = [f"({q(c)} IS NOT NULL AND NOT {d.full_match(q(c), p)})" for c, p in patterns.items()]
    hex_value = (
        "CASE " + " ".join(f"WHEN {b} THEN '{c}=' || {q(c)}" for b, c in zip(bad_hex, patterns, strict=True)) + " END"
    )
    early_limit = d.shift("minute_start", -tolerance_us)
    late_limit = d.shift("minute_start", 60_000_000 + tolerance_us)  # the minute's end plus the tolerance
    late = f"{q('time')} < {early_limit} OR {q('time')} >= {late_limit}"
    if band is None:
        elapsed = (
            f"0 AS elapsed_lines, 0 AS elapsed_failing, 0 AS elapsed_error, "
            f"CAST(NULL AS {d.string_type}) AS elapsed_sample"
        )
    else:
        if band.expect_zero:
            bad = "elapsed <> 0"
            error = "0"
        else:
            bad = f"elapsed > {band.ns_above} OR (elapsed > 0 AND elapsed < {band.ms_below})"
            # The nearest-rank median v_k (k = ceil(n/2)) is above `high` exactly when more than n/2
            # values are, and below `low` when at least n/2 are: counts, no sort needed.
            error = (
                f"CASE WHEN 2 * SUM(CASE WHEN elapsed > {band.high} THEN 1 ELSE 0 END) > COUNT(elapsed) "
                f"OR 2 * SUM(CASE WHEN elapsed < {band.low} THEN 1 ELSE 0 END) >= COUNT(elapsed) THEN 1 ELSE 0 END"
            )
        elapsed = (
            f"COUNT(elapsed) AS elapsed_lines, SUM(CASE WHEN {bad} THEN 1 ELSE 0 END) AS elapsed_failing, "
            f"{error} AS elapsed_error, "
            f"MIN(CASE WHEN {bad} THEN {key}CAST(elapsed AS {d.string_type}) END) AS elapsed_sample"
        )
    return f"""  SELECT {d.day("minute_start")} AS day, team, '{table}' AS table_name, COUNT(*) AS lines,
    {elapsed},
    SUM(CASE WHEN hex_value IS NOT NULL THEN 1 ELSE 0 END) AS hex_failing, MIN({key}hex_value) AS hex_sample,
    SUM(CASE WHEN time_value IS NOT NULL THEN 1 ELSE 0 END) AS time_failing, MIN({key}time_value) AS time_sample
  FROM (
    SELECT *, {hex_value} AS hex_value,
      CASE WHEN {late} THEN {d.iso_time(q("time"))} END AS time_value
    FROM (SELECT {distinct}{", ".join(q(c) for c in wanted)} FROM {ref} WHERE {where})
  )
  GROUP BY day, team"""


def quality_report_sql(
    d: Dialect, tables: Mapping[str, str], days: Sequence[date], bounds: QualityBounds | None = None
) -> str:
    """The quality report rows of `days` (unordered), from `tables` (table -> SQL reference)."""
    bounds = QualityBounds() if bounds is None else bounds
    tolerance_us = int(round(bounds.time_tolerance_seconds * 1_000_000))
    where = day_filter(d, days)
    present = [t for t in schema.TABLES if t in tables]
    per_table = "\n  UNION ALL\n".join(
        _table_quality_sql(d, t, tables[t], where, bounds.elapsed.get(t), tolerance_us) for t in present
    )
    checks = _literal_rows(
        [
            {"table_name": t, "check_name": c}
            for t in present
            for c in CHECKS
            if c != "elapsed_units" or t in bounds.elapsed
        ]
    )
    q = d.q
    return f"""WITH
checks AS ({checks}),
per_table AS (
{per_table}
),
judged AS (
  SELECT a.day, a.team, a.table_name, c.check_name, a.elapsed_error,
    CASE c.check_name WHEN 'elapsed_units' THEN a.elapsed_lines ELSE a.lines END AS rows_checked,
    CASE c.check_name WHEN 'elapsed_units' THEN a.elapsed_failing WHEN 'hex_formats' THEN a.hex_failing
      ELSE a.time_failing END AS rows_failing,
    CASE c.check_name WHEN 'elapsed_units' THEN a.elapsed_sample WHEN 'hex_formats' THEN a.hex_sample
      ELSE a.time_sample END AS sample
  FROM per_table a JOIN checks c ON c.table_name = a.table_name
)
SELECT day AS {q("day")}, team AS {q("team")}, table_name AS {q("table_name")}, check_name AS {q("check_name")},
  rows_checked AS {q("rows_checked")}, rows_failing AS {q("rows_failing")},
  CASE WHEN rows_failing = 0 THEN NULL
       WHEN check_name = 'hex_formats' OR (check_name = 'elapsed_units' AND elapsed_error = 1) THEN 'ERROR'
       ELSE 'WARN' END AS {q("severity")},
  SUBSTR(sample, 1, {_MINUTE_FILE_CHARS}) AS {q("sample_minute_file")},
  CAST(SUBSTR(sample, {_MINUTE_FILE_CHARS + 1}, {_LINE_NO_DIGITS}) AS {d.int_type}) AS {q("sample_line_no")},
  {_cut(f"SUBSTR(sample, {_MINUTE_FILE_CHARS + _LINE_NO_DIGITS + 1})")} AS {q("sample_value")}
FROM judged"""


def _quality_order(row: dict) -> tuple:
    return row["day"], row["team"], schema.TABLES.index(row["table_name"]), CHECKS.index(row["check_name"])


# ------------------------------------------------------------------------------------------------
# Running them
# ------------------------------------------------------------------------------------------------


def _as_rows(table: str, records: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    names = schema.column_names(table)
    out = []
    for record in records:
        row = dict(zip(names, record, strict=True))
        row["day"] = row["day"].isoformat()
        out.append(row)
    return out


def _run_duckdb(conn, output: str, wanted: Iterable[str], sql_for: Callable[[dict[str, str]], str]) -> list[dict]:
    """Rows of `output` from the SQL `sql_for(tables)` makes over the wanted tables that exist."""
    present = {r[0] for r in conn.execute("SELECT DISTINCT table_name FROM information_schema.tables").fetchall()}
    tables = {t: DUCKDB.q(t) for t in wanted if t in present}
    return _as_rows(output, conn.execute(sql_for(tables)).fetchall()) if tables else []


def _run_bigquery(
    client: bigquery.Client,
    target: BigQueryTarget | str,
    output: str,
    wanted: Iterable[str],
    sql_for: Callable[[dict[str, str]], str],
) -> list[dict]:
    """Rows of `output` from one query over the wanted tables of the dataset of `target` (a
    BigQueryTarget, whose byte limit, job timeout and location apply, or "project.dataset")."""
    config = bigquery.QueryJobConfig()
    location = None
    if isinstance(target, BigQueryTarget):
        config.maximum_bytes_billed = target.maximum_bytes_billed
        config.job_timeout_ms = int(target.job_timeout_seconds * 1000)
        location = target.location
        dataset_id = f"{target.project}.{target.dataset}"
    else:
        dataset_id = target
    present = {t.table_id for t in client.list_tables(dataset_id)}
    tables = {t: f"`{dataset_id}.{t}`" for t in wanted if t in present}
    if not tables:
        return []
    job = client.query(sql_for(tables), job_config=config, location=location)
    return _as_rows(output, (tuple(r.values()) for r in job.result()))


def leaderboard_rows_duckdb(
    conn,
    days: Iterable[date | str],
    min_values: int = DEFAULT_MIN_VALUES,
    bands: Mapping[str, ElapsedBand] | None = None,
) -> list[dict[str, Any]]:
    """The leaderboard of `days` from the tables in a DuckDB connection, in schema order (`day` as
    YYYY-MM-DD), sorted by day, metric (METRICS order), rank (unranked last), team."""
    days = as_days(days)
    if not days:
        return []
    rows = _run_duckdb(
        conn, "leaderboard", METRIC_TABLES, lambda t: leaderboard_sql(DUCKDB, t, days, min_values, bands)
    )
    return sorted(rows, key=_leaderboard_order)


def quality_report_rows_duckdb(
    conn, days: Iterable[date | str], bounds: QualityBounds | None = None
) -> list[dict[str, Any]]:
    """The quality report of `days` from the tables in a DuckDB connection, in schema order (`day`
    as YYYY-MM-DD), sorted by day, team, table (FORMAT.md order), check (CHECKS order)."""
    days = as_days(days)
    if not days:
        return []
    rows = _run_duckdb(conn, "quality_report", schema.TABLES, lambda t: quality_report_sql(DUCKDB, t, days, bounds))
    return sorted(rows, key=_quality_order)


def exports_connection(export_root: Path, days: Iterable[date | str]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB whose tables are views over the JSONL exports of `days` (read with the
    schema's types), for leaderboard_rows_duckdb/quality_report_rows_duckdb without a warehouse.
    A table without export files those days is left out."""
    conn = duckdb.connect()
    days = as_days(days)
    for table in schema.TABLES:
        files = [
            str(p)
            for d in days
            for p in sorted((export_root / table / f"{d:%Y/%m/%d}").glob("*.jsonl"))
            if p.stat().st_size
        ]
        if files:
            listing = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"
            conn.execute(
                f"CREATE TEMP VIEW {DUCKDB.q(table)} AS SELECT * FROM {schema.duckdb_read_json(table, listing)}"
            )
    return conn


def leaderboard_rows_bigquery(
    client: bigquery.Client,
    target: BigQueryTarget | str,
    days: Iterable[date | str],
    min_values: int = DEFAULT_MIN_VALUES,
    bands: Mapping[str, ElapsedBand] | None = None,
) -> list[dict[str, Any]]:
    """leaderboard_rows_duckdb's rows, from the BigQuery dataset of `target` (a BigQueryTarget or
    "project.dataset"); one query for all days, pruned to their partitions."""
    days = as_days(days)
    if not days:
        return []
    rows = _run_bigquery(
        client, target, "leaderboard", METRIC_TABLES, lambda t: leaderboard_sql(BIGQUERY, t, days, min_values, bands)
    )
    return sorted(rows, key=_leaderboard_order)


def quality_report_rows_bigquery(
    client: bigquery.Client,
    target: BigQueryTarget | str,
    days: Iterable[date | str],
    bounds: QualityBounds | None = None,
) -> list[dict[str, Any]]:
    """quality_report_rows_duckdb's rows, from the BigQuery dataset of `target`."""
    days = as_days(days)
    if not days:
        return []
    rows = _run_bigquery(
        client, target, "quality_report", schema.TABLES, lambda t: quality_report_sql(BIGQUERY, t, days, bounds)
    )
    return sorted(rows, key=_quality_order)
