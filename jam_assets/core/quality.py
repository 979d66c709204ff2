"""Data-quality checks over the published JSONL exports (FORMAT.md section 6).

They read what was written, not what the transform meant to write: an in-memory DuckDB runs SQL
over the export files of the checked minute files. Each check returns an `Outcome` (pass, WARN or
ERROR, a headline, the failing-row count, up to 5 sample offenders with `minute_file`, `line_no`
and the value); the Dagster wiring only translates it. No check changes or hides data.

The bounds are configuration (`QualityBounds`), with the defaults documented here and in the README.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from . import schema
from .transform import MinuteFileSummary

SAMPLES = 5

HASH32 = r"0x[0-9a-f]{64}"
HASH96 = r"0x[0-9a-f]{192}"
SIG64 = r"0x[0-9a-f]{128}"
SIG784 = r"0x[0-9a-f]{1000}[0-9a-f]{568}"  # RE2 caps one repetition at 1000
HEX_BLOB = r"0x([0-9a-f]{2})*"

_HASH32_COLUMNS = {
    "sender_id",
    "parent",
    "parent_state_root",
    "extrinsic_hash",
    "anchor",
    "state_root",
    "beefy_root",
    "lookup_anchor",
    "erasure_root",
    "exports_root",
    "work_package_hash",
    "code_hash",
    "authorizer_hash",
    "authorizer_code_hash",
    "preimage_hash",
}
_BLOB_COLUMNS = {"codec_encoded", "blob", "bitfield", "auth_output", "authorization", "authorizer_params"}


def hex_patterns(table: str) -> dict[str, str]:
    """Column -> the full-match pattern its non-null values must follow."""
    out = {}
    for c in schema.columns(table):
        if c.name in _HASH32_COLUMNS:
            out[c.name] = HASH32
        elif c.name in ("entropy_source", "seal"):
            out[c.name] = HASH96
        elif c.name == "signature":
            out[c.name] = SIG784 if table == "tickets" else SIG64
        elif c.name in _BLOB_COLUMNS:
            out[c.name] = HEX_BLOB
    return out


@dataclass(frozen=True)
class ElapsedBand:
    """What `elapsed` (µs) should look like for a table.

    low/high: a team whose median lies outside [low, high] is clearly using another unit (ERROR).
    ms_below: single values under this look like milliseconds (WARN).
    ns_above: single values over this look like nanoseconds (WARN).
    expect_zero: the spec says zero for now; any non-zero value is flagged (WARN).
    """

    low: int = 0
    high: int = 0
    ms_below: int = 0
    ns_above: int = 0
    expect_zero: bool = False


# A block must be authored within its 6-second slot (6,000,000 µs); FORMAT.md 6.
_BLOCK = ElapsedBand(low=1_000, high=6_000_000, ms_below=1_000, ns_above=6_000_000)
_ZERO = ElapsedBand(expect_zero=True)
DEFAULT_ELAPSED_BANDS: dict[str, ElapsedBand] = {
    "blocks": _BLOCK,
    "validatorstatistics": _BLOCK,
    "corestatistics": _BLOCK,
    "servicestatistics": _BLOCK,
    "workreports": ElapsedBand(low=100, high=6_000_000, ms_below=100, ns_above=6_000_000),  # refine
    "assurances": ElapsedBand(low=100, high=6_000_000, ms_below=100, ns_above=6_000_000),  # block -> assurance
    "tickets": ElapsedBand(low=1_000, high=60_000_000, ms_below=1_000, ns_above=60_000_000),  # ring VRF proof
    "preimages": _ZERO,
    "workpackages": _ZERO,
    "services": _ZERO,
    "segments": _ZERO,
}


@dataclass(frozen=True)
class QualityBounds:
    elapsed: Mapping[str, ElapsedBand] = field(default_factory=lambda: dict(DEFAULT_ELAPSED_BANDS))
    # Late lines are real (a node's clock, the receiver's buffering); a few seconds are normal.
    time_tolerance_seconds: float = 60.0


@dataclass
class Outcome:
    passed: bool
    severity: str  # "ERROR" or "WARN": how bad it is when it does not pass
    headline: str
    failing: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    # minute file -> failing rows (or lines) in it: which minutes failed, even in a range run
    by_minute: dict[str, int] = field(default_factory=dict)
    # minute file -> up to SAMPLES of its own offenders (a range's `samples` may all be one minute's)
    samples_by_minute: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.by_minute and not self.passed:
            self.headline += " " + where(self.by_minute)


def where(by_minute: Mapping[str, int], shown: int = 3) -> str:
    """`in 2025/04/23/0601 (3), 2025/04/23/0602 (1) and 4 more minute files`."""
    keys = sorted(by_minute)
    listed = ", ".join(f"{k} ({by_minute[k]})" for k in keys[:shown])
    more = len(keys) - shown
    return f"in {listed}" + (f" and {more} more minute file{'s' * (more > 1)}" if more > 0 else "")


def _by_minute(rows: Sequence[tuple], names: Sequence[str]) -> dict[str, Any]:
    """`by_minute` and `samples_by_minute` of an Outcome from its failing rows (ordered by minute
    file, then line), each row's first value being its minute_file."""
    counts: dict[str, int] = {}
    grouped: dict[str, list[tuple]] = {}
    for row in rows:
        counts[row[0]] = counts.get(row[0], 0) + 1
        if counts[row[0]] <= SAMPLES:
            grouped.setdefault(row[0], []).append(row)
    return {"by_minute": counts, "samples_by_minute": {k: _sample_rows(v, names) for k, v in grouped.items()}}


class Exports:
    """The published JSONL files of some minute files, queryable with SQL.

    Each table's files are parsed once into a temporary table, whatever the number of checks that
    read them (a day's range is 1,440 files per table). The temporary tables spill to `spill_dir`
    rather than exhausting memory.
    """

    def __init__(self, export_root: Path, minute_files: Sequence[str], spill_dir: Path | None = None):
        self.root = export_root
        self.minute_files = list(minute_files)
        self.conn = duckdb.connect()
        if spill_dir is not None:
            spill_dir.mkdir(parents=True, exist_ok=True)
            self.conn.execute(f"SET temp_directory = '{str(spill_dir).replace(chr(39), chr(39) * 2)}'")
        self._loaded: dict[str, str | None] = {}

    def files(self, table: str) -> list[str]:
        return [
            str(p) for k in self.minute_files if (p := self.root / table / f"{k}.jsonl").exists() and p.stat().st_size
        ]

    def relation(self, table: str, columns: Sequence[str] | None = None) -> str | None:
        """A SQL FROM item over the table's rows (`columns` is a hint), or None when there are none."""
        if table not in self._loaded:
            files = self.files(table)
            name = None
            if files:
                name = f"exported_{table}"
                listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
                self.conn.execute(
                    f"CREATE TEMP TABLE {name} AS SELECT * FROM {schema.duckdb_read_json(table, f'[{listing}]')}"
                )
            self._loaded[table] = name
        return self._loaded[table]

    def rows(self, sql: str) -> list[tuple]:
        return self.conn.execute(sql).fetchall()

    def close(self) -> None:
        self.conn.close()


def _sample_rows(rows: list[tuple], names: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for row in rows[:SAMPLES]:
        item = dict(zip(names, row))
        value = item.get("value")
        if isinstance(value, str) and len(value) > 80:
            item["value"] = value[:77] + "..."
        out.append(item)
    return out


def _quote(name: str) -> str:
    return f'"{name}"'


def check_hex_formats(exports: Exports, table: str) -> Outcome:
    patterns = hex_patterns(table)
    required = [c.name for c in schema.columns(table) if c.required]
    rel = exports.relation(table)
    if rel is None:
        return Outcome(True, "ERROR", "no rows to check")
    parts = []
    for col, pattern in patterns.items():
        parts.append(
            f"SELECT minute_file, line_no, '{col}' AS col, {_quote(col)} AS value FROM t "
            f"WHERE {_quote(col)} IS NOT NULL AND NOT regexp_full_match({_quote(col)}, '{pattern}')"
        )
    for col in required:
        parts.append(f"SELECT minute_file, line_no, '{col}' AS col, NULL AS value FROM t WHERE {_quote(col)} IS NULL")
    sql = f"WITH t AS (SELECT * FROM {rel}), bad AS ({' UNION ALL '.join(parts)}) SELECT * FROM bad ORDER BY minute_file, line_no, col"
    bad = exports.rows(sql)
    by_column: dict[str, int] = {}
    for _, _, col, _ in bad:
        by_column[col] = by_column.get(col, 0) + 1
    checked = ", ".join(sorted(patterns))
    if not bad:
        return Outcome(True, "ERROR", f"{len(patterns)} hex column(s) well-formed", extra={"columns_checked": checked})
    worst = ", ".join(f"{c} {n}" for c, n in sorted(by_column.items(), key=lambda x: -x[1]))
    names = ["minute_file", "line_no", "column", "value"]
    return Outcome(
        False,
        "ERROR",
        f"{len(bad)} malformed values ({worst})",
        len(bad),
        _sample_rows(bad, names),
        {"failing_by_column": by_column, "columns_checked": checked},
        **_by_minute(bad, names),
    )


def check_elapsed(exports: Exports, table: str, band: ElapsedBand) -> Outcome:
    rel = exports.relation(table, ["minute_file", "line_no", "team", "elapsed"])
    if rel is None:
        return Outcome(True, "WARN", "no rows to check")
    # Statistics tables repeat the line's elapsed on every record row: judge each line once.
    base = f"SELECT DISTINCT minute_file, line_no, team, elapsed FROM {rel} WHERE elapsed IS NOT NULL"
    per_team = exports.rows(
        f"SELECT team, count(*), median(elapsed)::BIGINT, min(elapsed), max(elapsed) FROM ({base}) GROUP BY team ORDER BY team"
    )
    if band.expect_zero:
        cond, why = "elapsed <> 0", "non-zero where the spec says zero"
    else:
        cond = f"elapsed > {band.ns_above} OR (elapsed > 0 AND elapsed < {band.ms_below})"
        why = "values that look like another unit"
    suspects = exports.rows(
        f"SELECT minute_file, line_no, team, elapsed, CASE WHEN elapsed > {band.ns_above or 0} AND NOT {str(band.expect_zero).lower()} "
        f"THEN 'nanoseconds?' WHEN {str(band.expect_zero).lower()} THEN 'non-zero' ELSE 'milliseconds?' END "
        f"FROM ({base}) WHERE {cond} ORDER BY minute_file, line_no"
    )
    teams_table = [
        {"team": team, "values": n, "median_us": med, "min_us": lo, "max_us": hi} for team, n, med, lo, hi in per_team
    ]
    wrong_teams = []
    if not band.expect_zero:
        for row in teams_table:
            if not band.low <= row["median_us"] <= band.high:
                unit = "nanoseconds" if row["median_us"] > band.high else "milliseconds"
                wrong_teams.append(f"{row['team']} (median {row['median_us']:,} µs, looks like {unit})")
    extra = {"per_team": teams_table, "band_us": [band.low, band.high] if not band.expect_zero else [0, 0]}
    names = ["minute_file", "line_no", "team", "value", "looks_like"]
    samples = _sample_rows(suspects, names)
    if wrong_teams:
        return Outcome(
            False,
            "ERROR",
            "team median outside the plausible band: " + "; ".join(wrong_teams),
            len(suspects),
            samples,
            extra,
            **_by_minute(suspects, names),
        )
    if suspects:
        return Outcome(
            False,
            "WARN",
            f"{len(suspects)} lines with {why}",
            len(suspects),
            samples,
            extra,
            **_by_minute(suspects, names),
        )
    values = sum(r["values"] for r in teams_table)
    if not values:
        return Outcome(True, "WARN", "no elapsed values", extra=extra)
    return Outcome(True, "WARN", f"{values} values from {len(teams_table)} teams, all plausible", extra=extra)


def check_time_window(exports: Exports, table: str, tolerance_seconds: float) -> Outcome:
    rel = exports.relation(table, ["minute_file", "line_no", "time"])
    if rel is None:
        return Outcome(True, "WARN", "no rows to check")
    tol = float(tolerance_seconds)
    sql = (
        f"WITH t AS (SELECT DISTINCT minute_file, line_no, time, strptime(minute_file, '%Y/%m/%d/%H%M') AS m FROM {rel}) "
        f"SELECT minute_file, line_no, strftime(time, '%Y-%m-%dT%H:%M:%S.%fZ') AS value, "
        f"round(epoch(time) - epoch(m), 3) AS offset_s FROM t "
        f"WHERE time < m - to_microseconds({int(tol * 1e6)}) OR time >= m + INTERVAL 1 MINUTE + to_microseconds({int(tol * 1e6)}) "
        f"ORDER BY minute_file, line_no"
    )
    outside = exports.rows(sql)
    if not outside:
        return Outcome(True, "WARN", f"every line within its minute ±{tol:g} s")
    names = ["minute_file", "line_no", "value", "seconds_from_minute_start"]
    return Outcome(
        False,
        "WARN",
        f"{len(outside)} lines outside their minute ±{tol:g} s",
        len(outside),
        _sample_rows(outside, names),
        **_by_minute(outside, names),
    )


def check_lines_accounted(exports: Exports, summaries: Mapping[str, MinuteFileSummary]) -> Outcome:
    """Lines that gave rows + rejected lines = lines in the file, for every minute file, from the exports."""
    parts = [
        f"SELECT minute_file, line_no FROM {rel}"
        for t in schema.ALL_TABLES
        if (rel := exports.relation(t, ["minute_file", "line_no"])) is not None
    ]
    stored: dict[str, int] = {}
    if parts:
        stored = dict(
            exports.rows(f"SELECT minute_file, count(DISTINCT line_no) FROM ({' UNION ALL '.join(parts)}) GROUP BY 1")
        )
    wrong = []
    for key in sorted(summaries):
        expected, found = summaries[key].lines, stored.get(key, 0)
        if expected != found:
            wrong.append({"minute_file": key, "lines_in_file": expected, "lines_in_outputs": found})
    total = sum(s.lines for s in summaries.values())
    if not wrong:
        return Outcome(True, "ERROR", f"all {total} lines of {len(summaries)} minute files accounted for")
    lost = sum(w["lines_in_file"] - w["lines_in_outputs"] for w in wrong)
    return Outcome(
        False,
        "ERROR",
        f"{len(wrong)} minute files do not add up ({lost:+d} lines missing)",
        len(wrong),
        wrong[:SAMPLES],
        by_minute={w["minute_file"]: w["lines_in_file"] - w["lines_in_outputs"] for w in wrong},
        samples_by_minute={w["minute_file"]: [w] for w in wrong},
    )


def _envelope_fact(summaries: Mapping[str, MinuteFileSummary], count: str, samples: str, ok: str, bad: str) -> Outcome:
    failing = sum(getattr(s, count) for s in summaries.values())
    if not failing:
        return Outcome(True, "ERROR", ok)
    found = [x for s in summaries.values() for x in getattr(s, samples)][:SAMPLES]
    failing_minutes = {k: s for k, s in summaries.items() if getattr(s, count)}
    return Outcome(
        False,
        "ERROR",
        bad.format(n=failing),
        failing,
        found,
        by_minute={k: getattr(s, count) for k, s in failing_minutes.items()},
        samples_by_minute={k: getattr(s, samples)[:SAMPLES] for k, s in failing_minutes.items()},
    )


def check_preimage_hash(summaries: Mapping[str, MinuteFileSummary]) -> Outcome:
    return _envelope_fact(
        summaries,
        "preimage_hash_mismatches",
        "preimage_hash_samples",
        "preimage_hash equals metadata h wherever the line has one",
        "{n} preimages whose BLAKE2b-256 differs from metadata h",
    )


def check_codec_len(summaries: Mapping[str, MinuteFileSummary]) -> Outcome:
    return _envelope_fact(
        summaries,
        "codec_len_mismatches",
        "codec_len_samples",
        "codec_encoded has metadata codec_len bytes wherever both exist",
        "{n} lines whose codec_encoded length differs from metadata codec_len",
    )
