"""The leaderboard and the quality report (jam_assets/leaderboard): the warehouse SQL against an
independent computation in plain Python over the exported rows, DuckDB against BigQuery (the
emulator) on the same rows, and the page, Markdown and terminal renderings.

The minute files are written line by line with the project's generator (payloads as the nodes send
them), each line's team and `elapsed` chosen, and go through the core transform into the exports,
DuckDB and BigQuery, as a run would.
"""

from __future__ import annotations

import base64
import html.parser
import math
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction

import duckdb
import orjson
import pytest

from jam_assets.core import schema
from jam_assets.core.envelope import JAM_EPOCH, SLOT_SECONDS
from jam_assets.core.generator import Generator, Profile
from jam_assets.core.quality import DEFAULT_ELAPSED_BANDS, QualityBounds, hex_patterns
from jam_assets.core.staging import JsonlStage, export_path, publish
from jam_assets.core.transform import transform_stream
from jam_assets.leaderboard import compute, page, terminal
from jam_assets.sinks import bigquery as bq_sink
from jam_assets.sinks.duckdb import replace_minute_files

from .bigquery_emulator import bigquery_emulator, bq, bq_dataset  # noqa: F401 (fixtures)
from .helpers import read_jsonl

D0, D1, D2 = "2025-04-22", "2025-04-23", "2025-04-24"
TEAMS = ("ALPHA", "BRAVO", "CHARLIE", "DELTA", "NANO", "FEW", "FEWNANO", "MILLI")
NANO_FROM = "2025/04/23/1402"  # NANO's node switched to nanoseconds with this minute file
BROKEN_HEX = "0x" + "AB" * 32  # upper case: not a hash
BROKEN_SEAL = "0x" + "CD" * 96
D1_MINUTES = [f"2025/04/23/14{m:02d}" for m in range(6)]
D2_MINUTES = [f"2025/04/24/10{m:02d}" for m in range(3)]
LAST_D1 = "2025/04/23/2359"

# The independent computation's own copy of the metric definitions (the issue's list).
EXPECTED_METRICS = {
    "block_author": ("blocks", True),
    "refine": ("workreports", True),
    "assurance": ("assurances", True),
    "ticket": ("tickets", True),
    "blocks": ("blocks", False),
    "work_reports": ("workreports", False),
    "assurances": ("assurances", False),
    "tickets": ("tickets", False),
    "preimages": ("preimages", False),
}
PROFILE = Profile(
    "leaderboard-test",
    validators=len(TEAMS),
    cores=2,
    services=2,
    work_report_rate=0.0,
    assurance_rate=0.0,
    work_package_rate=0.0,
    ticket_rate=0.0,
    preimage_rate=0.0,
    new_service_rate=0.0,
    teams=TEAMS,
)


class MinuteFiles:
    """Minute files built line by line: each line at the next half second of its minute unless told."""

    def __init__(self) -> None:
        self.gen = Generator(PROFILE, seed=11)
        self.lines: dict[str, list[bytes]] = defaultdict(list)

    def add(
        self, key: str, kind: str, team: str, elapsed: int | None, at: datetime | None = None, broken_hex: bool = False
    ) -> None:
        start = datetime.strptime(key, "%Y/%m/%d/%H%M").replace(tzinfo=UTC)
        when = at or start + timedelta(seconds=0.5 * len(self.lines[key]) + 0.25)
        slot = (int(when.timestamp()) - JAM_EPOCH) // SLOT_SECONDS
        v = TEAMS.index(team)
        make = {
            "block": lambda: self.gen.block(when, slot, v),
            "statistics": lambda: self.gen.statistics(when, v),
            "workreport": lambda: self.gen.work_report(when, 0, v, slot),
            "assurance": lambda: self.gen.assurance(when, v),
            "ticket": lambda: self.gen.ticket(when, v),
            "preimage": lambda: self.gen.preimage(when, v),
        }[kind]
        line = orjson.loads(make())
        line.pop("elapsed", None)
        if elapsed is not None:
            line["elapsed"] = elapsed
        if broken_hex and kind == "workreport":
            line["json_encoded"]["package_spec"]["erasure_root"] = BROKEN_HEX
        elif broken_hex:
            line["json_encoded"]["header"]["seal"] = BROKEN_SEAL
        self.lines[key].append(orjson.dumps(line))

    def spread(self, keys: list[str], kind: str, team: str, values: list[int | None]) -> None:
        for i, value in enumerate(values):
            self.add(keys[i % len(keys)], kind, team, value)


def scenario() -> MinuteFiles:
    f = MinuteFiles()
    # D0: never asked for together with D1 unless named; values that would flag ALPHA.
    f.spread(["2025/04/22/2358"], "block", "ALPHA", [5] * 10)
    # D1 blocks.
    f.spread(D1_MINUTES, "block", "ALPHA", [40_000 + 1_000 * i for i in range(12)] + [None])
    day_end = datetime(2025, 4, 24, tzinfo=UTC)
    f.add(LAST_D1, "block", "ALPHA", 90_000, at=day_end - timedelta(seconds=30))
    f.add(LAST_D1, "block", "ALPHA", 91_000, at=day_end + timedelta(seconds=10))  # next day, within tolerance
    f.add(LAST_D1, "block", "ALPHA", 92_000, at=day_end + timedelta(seconds=90))  # next day, outside the window
    f.spread(
        D1_MINUTES, "block", "BRAVO", [10_000, 20_000, 30_000, 40_000, 70_000, 70_000, 80_000, 90_000, 100_000, 110_000]
    )
    f.spread(D1_MINUTES, "block", "CHARLIE", [65_000 + 1_000 * i for i in range(11)])  # median 70,000 too: a tie
    f.spread(D1_MINUTES, "block", "DELTA", [500_000] * 10)
    for key in D1_MINUTES:
        for i in range(2):
            value = 100_000 + i if key < NANO_FROM else 100_000_000 + i
            f.add(key, "block", "NANO", value)
            f.add(key, "statistics", "NANO", value)  # 8 validator records, 2 cores: judged once per line
    f.spread(D1_MINUTES, "block", "FEW", [45_000] * 3)
    f.add("2025/04/23/1405", "block", "FEW", 46_000, broken_hex=True)
    f.spread(D1_MINUTES, "block", "FEWNANO", [200_000_000] * 2)
    # D1 work reports: two malformed, from 1403 on; ALPHA and CHARLIE tie on the count.
    f.spread(D1_MINUTES, "workreport", "ALPHA", [5_000 + 1_000 * i for i in range(10)])
    f.spread(D1_MINUTES, "workreport", "BRAVO", [20_000] * 10)
    f.add("2025/04/23/1403", "workreport", "BRAVO", 21_000, broken_hex=True)
    f.add("2025/04/23/1404", "workreport", "BRAVO", 22_000, broken_hex=True)
    f.spread(D1_MINUTES, "workreport", "CHARLIE", [30_000] * 10)
    f.add("2025/04/23/1401", "workreport", "FEW", 10_000)
    # D1 assurances: MILLI sends milliseconds.
    f.spread(D1_MINUTES, "assurance", "ALPHA", [5_000 + 10 * i for i in range(10)])
    f.spread(D1_MINUTES, "assurance", "MILLI", list(range(3, 13)))
    # D1 tickets and preimages (a preimage line has no team: `unknown`).
    f.spread(D1_MINUTES, "ticket", "CHARLIE", [300_000 + i for i in range(10)])
    f.add("2025/04/23/1405", "ticket", "FEW", 250_000)
    f.spread(D1_MINUTES, "preimage", "ALPHA", [None, None])
    # D2: NANO back in microseconds.
    f.spread(D2_MINUTES, "block", "ALPHA", [45_000 + 500 * i for i in range(10)])
    f.spread(D2_MINUTES, "block", "BRAVO", [60_000] * 10)
    f.spread(D2_MINUTES, "block", "NANO", [100_000 + i for i in range(10)])
    return f


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """The scenario through the transform: exports, DuckDB (jam.duckdb) and the batches a run hands a warehouse."""
    root = tmp_path_factory.mktemp("leaderboard")
    logs, exports = root / "logs", root / "exports"
    files = scenario()
    batches: dict[str, dict[str, object]] = {t: {} for t in schema.ALL_TABLES}
    for key in sorted(files.lines):
        log = logs / f"{key}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_bytes(b"".join(line + b"\n" for line in files.lines[key]))
        stage = JsonlStage(root / "staging" / key.replace("/", ""))
        with log.open("rb") as stream:
            summary = transform_stream(stream, key, stage)
        assert summary.rejected == 0
        for table, staged in stage.close().items():
            publish(staged, export_path(exports, table, key))
            batches[table][key] = export_path(exports, table, key)
    conn = duckdb.connect(str(exports / "jam.duckdb"))
    replace_minute_files(conn, batches)
    rows = {t: [r for key in sorted(batches[t]) for r in read_jsonl(batches[t][key])] for t in schema.TABLES}
    yield {"conn": conn, "exports": exports, "batches": batches, "rows": rows, "root": root}
    conn.close()


# ------------------------------------------------------------------------------------------------
# The independent computation: plain Python over the exported rows
# ------------------------------------------------------------------------------------------------


def day_of(row: dict) -> str:
    return row["minute_file"][:10].replace("/", "-")


def nearest_rank(sorted_values: list[int], p: Fraction) -> int:
    return sorted_values[math.ceil(p * len(sorted_values)) - 1]


def expected_leaderboard(rows: dict[str, list[dict]], days: list[str], min_values: int = 10) -> list[dict]:
    out = []
    for metric, (table, timed) in EXPECTED_METRICS.items():
        groups: dict[tuple[str, str], list] = defaultdict(list)
        for r in rows[table]:
            if day_of(r) in days:
                groups[(day_of(r), r["team"])].append(r["elapsed"])
        band = DEFAULT_ELAPSED_BANDS[table]
        entries = []
        for (day, team), elapsed in groups.items():
            values = sorted(v for v in elapsed if v is not None)
            e = {
                "day": day,
                "team": team,
                "metric": metric,
                "values": len(values) if timed else len(elapsed),
                "median_us": None,
                "p90_us": None,
                "min_us": None,
                "max_us": None,
                "rank": None,
                "flag": None,
            }
            if timed and values:
                e |= {
                    "median_us": nearest_rank(values, Fraction(1, 2)),
                    "p90_us": nearest_rank(values, Fraction(9, 10)),
                    "min_us": values[0],
                    "max_us": values[-1],
                }
            if e["median_us"] is not None and not band.low <= e["median_us"] <= band.high:
                e["flag"] = "unit_suspect"
            elif e["values"] < min_values:
                e["flag"] = "too_few_values"
            entries.append(e)
        for e in entries:
            if e["flag"] is None:
                key = (lambda o: o["median_us"]) if timed else (lambda o: -o["values"])
                rivals = [o for o in entries if o["day"] == e["day"] and o["flag"] is None]
                e["rank"] = 1 + sum(key(o) < key(e) for o in rivals)
        out.extend(entries)
    order = list(EXPECTED_METRICS)
    return sorted(out, key=lambda r: (r["day"], order.index(r["metric"]), r["rank"] is None, r["rank"] or 0, r["team"]))


def cut(value: str) -> str:
    return value if len(value) <= 80 else value[:77] + "..."


def malformed_column(row: dict, patterns: dict[str, str]) -> str | None:
    return next((c for c, p in patterns.items() if row[c] is not None and not re.fullmatch(p, row[c])), None)


def outside_window(row: dict, tolerance: timedelta) -> bool:
    start = datetime.strptime(row["minute_file"], "%Y/%m/%d/%H%M").replace(tzinfo=UTC)
    t = datetime.strptime(row["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return t < start - tolerance or t >= start + timedelta(minutes=1) + tolerance


def quality_row(day, team, table, check, checked, failing, severity, sample_value) -> dict:
    first = failing[0] if failing else None
    return {
        "day": day,
        "team": team,
        "table_name": table,
        "check_name": check,
        "rows_checked": len(checked),
        "rows_failing": len(failing),
        "severity": severity if failing else None,
        "sample_minute_file": first and first["minute_file"],
        "sample_line_no": first and first["line_no"],
        "sample_value": first and cut(sample_value(first)),
    }


def expected_quality(rows: dict[str, list[dict]], days: list[str], tolerance_s: float = 60.0) -> list[dict]:
    out = []
    tolerance = timedelta(seconds=tolerance_s)
    for table in schema.TABLES:
        lines = {}
        for r in rows[table]:
            if day_of(r) in days:
                lines.setdefault((r["minute_file"], r["line_no"]), r)  # a statistics line's records: once
        by_team: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for _, r in sorted(lines.items()):
            by_team[(day_of(r), r["team"])].append(r)
        band, patterns = DEFAULT_ELAPSED_BANDS[table], hex_patterns(table)
        for (day, team), team_lines in sorted(by_team.items()):
            timed = [r for r in team_lines if r["elapsed"] is not None]
            if band.expect_zero:
                bad = [r for r in timed if r["elapsed"] != 0]
                severity = "WARN"
            else:
                bad = [r for r in timed if r["elapsed"] > band.ns_above or 0 < r["elapsed"] < band.ms_below]
                median = nearest_rank(sorted(r["elapsed"] for r in timed), Fraction(1, 2)) if timed else None
                severity = "ERROR" if median is not None and not band.low <= median <= band.high else "WARN"
            out.append(
                quality_row(day, team, table, "elapsed_units", timed, bad, severity, lambda r: str(r["elapsed"]))
            )
            bad = [r for r in team_lines if malformed_column(r, patterns)]
            out.append(
                quality_row(
                    day,
                    team,
                    table,
                    "hex_formats",
                    team_lines,
                    bad,
                    "ERROR",
                    lambda r, p=patterns: f"{malformed_column(r, p)}={r[malformed_column(r, p)]}",
                )
            )
            bad = [r for r in team_lines if outside_window(r, tolerance)]
            out.append(quality_row(day, team, table, "time_in_window", team_lines, bad, "WARN", lambda r: r["time"]))
    checks = ["elapsed_units", "hex_formats", "time_in_window"]
    return sorted(
        out, key=lambda r: (r["day"], r["team"], schema.TABLES.index(r["table_name"]), checks.index(r["check_name"]))
    )


def by(rows: list[dict], **match) -> dict:
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, found)
    return found[0]


# ------------------------------------------------------------------------------------------------
# The leaderboard
# ------------------------------------------------------------------------------------------------


def test_leaderboard_equals_the_independent_computation_on_every_column(loaded):
    got = compute.leaderboard_rows_duckdb(loaded["conn"], [D1, D2])
    assert got == expected_leaderboard(loaded["rows"], [D1, D2])
    assert all(list(r) == list(schema.column_names("leaderboard")) for r in got)


def test_flags_ranks_and_ties_as_the_issue_says(loaded):
    rows = compute.leaderboard_rows_duckdb(loaded["conn"], [D1])
    block = {r["team"]: r for r in rows if r["metric"] == "block_author"}
    # ALPHA: 15 values (one block without elapsed; three from 23:59 whose time is the next day).
    assert (block["ALPHA"]["values"], block["ALPHA"]["median_us"], block["ALPHA"]["p90_us"]) == (15, 47_000, 91_000)
    assert (block["ALPHA"]["min_us"], block["ALPHA"]["max_us"], block["ALPHA"]["rank"]) == (40_000, 92_000, 1)
    assert [(block[t]["median_us"], block[t]["rank"]) for t in ("BRAVO", "CHARLIE", "DELTA")] == [
        (70_000, 2),
        (70_000, 2),
        (500_000, 4),
    ]
    assert [(block[t]["flag"], block[t]["rank"]) for t in ("NANO", "FEW", "FEWNANO")] == [
        ("unit_suspect", None),
        ("too_few_values", None),
        ("unit_suspect", None),
    ]  # unit_suspect wins
    assert by(rows, metric="assurance", team="MILLI")["flag"] == "unit_suspect"
    assert by(rows, metric="blocks", team="ALPHA")["values"] == 16  # rows, the elapsed-less one too
    counts = {r["team"]: (r["values"], r["rank"], r["flag"]) for r in rows if r["metric"] == "work_reports"}
    assert counts == {
        "BRAVO": (12, 1, None),
        "ALPHA": (10, 2, None),
        "CHARLIE": (10, 2, None),
        "FEW": (1, None, "too_few_values"),
    }
    assert by(rows, metric="preimages", team="unknown")["values"] == 2
    assert by(rows, metric="blocks", team="ALPHA")["median_us"] is None
    # Ordered by day, metric, rank (unranked last), team.
    assert [r["team"] for r in rows if r["metric"] == "block_author"] == [
        "ALPHA",
        "BRAVO",
        "CHARLIE",
        "DELTA",
        "FEW",
        "FEWNANO",
        "NANO",
    ]


def test_a_day_is_its_own_minute_files_whatever_the_rows_time(loaded):
    one_by_one = [r for d in (D2, D0, D1) for r in compute.leaderboard_rows_duckdb(loaded["conn"], [d])]
    together = compute.leaderboard_rows_duckdb(loaded["conn"], [D0, D1, D2])
    assert sorted(one_by_one, key=lambda r: (r["day"], r["metric"], r["team"])) == sorted(
        together, key=lambda r: (r["day"], r["metric"], r["team"])
    )
    assert {r["day"] for r in compute.leaderboard_rows_duckdb(loaded["conn"], [D1])} == {D1}
    assert by(together, day=D0, metric="block_author", team="ALPHA")["flag"] == "unit_suspect"
    assert compute.leaderboard_rows_duckdb(loaded["conn"], ["2025-04-21"]) == []
    assert compute.leaderboard_rows_duckdb(loaded["conn"], []) == []


def test_min_values_decides_who_is_ranked(loaded):
    rows = compute.leaderboard_rows_duckdb(loaded["conn"], [D1], min_values=3)
    assert by(rows, metric="block_author", team="FEW")["rank"] == 1  # 45,000 beats ALPHA's 47,000
    assert by(rows, metric="block_author", team="FEWNANO")["flag"] == "unit_suspect"
    assert rows == expected_leaderboard(loaded["rows"], [D1], min_values=3)
    with pytest.raises(ValueError, match="min_values"):
        compute.leaderboard_rows_duckdb(loaded["conn"], [D1], min_values=0)


def test_the_exports_give_the_warehouse_rows(loaded):
    conn = compute.exports_connection(loaded["exports"], [D1, D2])
    try:
        assert compute.leaderboard_rows_duckdb(conn, [D1, D2]) == compute.leaderboard_rows_duckdb(
            loaded["conn"], [D1, D2]
        )
        assert compute.quality_report_rows_duckdb(conn, [D1]) == compute.quality_report_rows_duckdb(
            loaded["conn"], [D1]
        )
    finally:
        conn.close()


def test_every_scan_is_bounded_to_the_days_asked_for():
    days = compute.as_days(date(2025, 1, 1) + timedelta(days=i) for i in range(365))
    lb = compute.leaderboard_sql(compute.BIGQUERY, {t: f"`p.d.{t}`" for t in compute.METRIC_TABLES}, days)
    bounds = "minute_start >= TIMESTAMP '2025-01-01 00:00:00+00' AND minute_start < TIMESTAMP '2026-01-01 00:00:00+00'"
    assert lb.count("FROM `p.d.") == len(compute.METRIC_TABLES) == lb.count(f"WHERE (({bounds}))")
    sparse = compute.quality_report_sql(
        compute.DUCKDB,
        {t: f'"{t}"' for t in schema.TABLES},
        compute.as_days(["2025-04-24", "2025-04-22", "2025-04-23", "2025-06-01"]),
    )
    ranges = (
        "((minute_start >= TIMESTAMP '2025-04-22 00:00:00' AND minute_start < TIMESTAMP '2025-04-25 00:00:00')"
        " OR (minute_start >= TIMESTAMP '2025-06-01 00:00:00' AND minute_start < TIMESTAMP '2025-06-02 00:00:00'))"
    )
    assert len(re.findall(r"FROM \"\w+\"", sparse)) == len(schema.TABLES) == sparse.count(f"WHERE {ranges}")


def test_a_year_of_days_in_one_call(loaded):
    year = [date(2025, 1, 1) + timedelta(days=i) for i in range(365)]
    assert compute.leaderboard_rows_duckdb(loaded["conn"], year) == expected_leaderboard(loaded["rows"], [D0, D1, D2])
    assert compute.quality_report_rows_duckdb(loaded["conn"], year) == expected_quality(loaded["rows"], [D0, D1, D2])


# ------------------------------------------------------------------------------------------------
# The quality report
# ------------------------------------------------------------------------------------------------


def test_quality_report_equals_the_independent_computation(loaded):
    got = compute.quality_report_rows_duckdb(loaded["conn"], [D1, D2])
    assert got == expected_quality(loaded["rows"], [D1, D2])
    assert all(list(r) == list(schema.column_names("quality_report")) for r in got)


def test_a_team_in_nanoseconds_since_a_minute_is_reported_at_that_minute(loaded):
    rows = compute.quality_report_rows_duckdb(loaded["conn"], [D1])
    nano = by(rows, team="NANO", table_name="blocks", check_name="elapsed_units")
    first_nano_line = next(
        r["line_no"] for r in read_jsonl(loaded["batches"]["blocks"][NANO_FROM]) if r["team"] == "NANO"
    )
    assert nano == {
        "day": D1,
        "team": "NANO",
        "table_name": "blocks",
        "check_name": "elapsed_units",
        "rows_checked": 12,
        "rows_failing": 8,
        "severity": "ERROR",
        "sample_minute_file": NANO_FROM,
        "sample_line_no": first_nano_line,
        "sample_value": "100000000",
    }
    # 8 validator records a statistics line, counted once.
    stats = by(rows, team="NANO", table_name="validatorstatistics", check_name="elapsed_units")
    assert (stats["rows_checked"], stats["rows_failing"], stats["sample_minute_file"]) == (12, 8, NANO_FROM)
    milli = by(rows, team="MILLI", table_name="assurances", check_name="elapsed_units")
    assert (milli["rows_failing"], milli["severity"], milli["sample_value"]) == (10, "ERROR", "3")
    hexes = by(rows, team="BRAVO", table_name="workreports", check_name="hex_formats")
    assert (hexes["rows_checked"], hexes["rows_failing"], hexes["severity"], hexes["sample_minute_file"]) == (
        12,
        2,
        "ERROR",
        "2025/04/23/1403",
    )
    assert hexes["sample_value"] == f"erasure_root={BROKEN_HEX}"
    seal = by(rows, team="FEW", table_name="blocks", check_name="hex_formats")
    assert (seal["rows_failing"], seal["sample_value"]) == (1, f"seal={BROKEN_SEAL}"[:77] + "...")
    late = by(rows, team="ALPHA", table_name="blocks", check_name="time_in_window")
    assert (late["rows_failing"], late["severity"], late["sample_minute_file"]) == (1, "WARN", LAST_D1)
    assert late["sample_value"].startswith("2025-04-24T00:01:30.")
    clean = by(rows, team="DELTA", table_name="blocks", check_name="hex_formats")
    assert (clean["rows_failing"], clean["severity"], clean["sample_minute_file"], clean["sample_value"]) == (
        0,
        None,
        None,
        None,
    )


def test_unit_suspect_on_the_leaderboard_is_an_elapsed_error_in_the_quality_report(loaded):
    board = compute.leaderboard_rows_duckdb(loaded["conn"], [D0, D1, D2])
    quality = compute.quality_report_rows_duckdb(loaded["conn"], [D0, D1, D2])
    timed = {name: table for name, (table, is_timed) in EXPECTED_METRICS.items() if is_timed}
    suspects = {(r["day"], r["team"], timed[r["metric"]]) for r in board if r["flag"] == "unit_suspect"}
    errors = {
        (r["day"], r["team"], r["table_name"])
        for r in quality
        if r["check_name"] == "elapsed_units" and r["severity"] == "ERROR" and r["table_name"] in timed.values()
    }
    assert (
        suspects
        == errors
        == {(D0, "ALPHA", "blocks"), (D1, "NANO", "blocks"), (D1, "FEWNANO", "blocks"), (D1, "MILLI", "assurances")}
    )


def test_quality_bounds_are_the_checks_bounds(loaded):
    tight = QualityBounds(time_tolerance_seconds=0.0)
    rows = compute.quality_report_rows_duckdb(loaded["conn"], [D1], tight)
    assert by(rows, team="ALPHA", table_name="blocks", check_name="time_in_window")["rows_failing"] == 2
    assert rows == expected_quality(loaded["rows"], [D1], tolerance_s=0.0)


# ------------------------------------------------------------------------------------------------
# BigQuery: the same rows, the same numbers
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow  # the emulator: a server (about 2 s to start) and 11 table loads
def test_bigquery_gives_duckdbs_rows(loaded, bq_dataset):  # noqa: F811 (the fixture)
    target = bq_sink.BigQueryTarget(bq_dataset.project, bq_dataset.dataset, maximum_bytes_billed=10**9)
    writer = bq_sink.BigQueryWriter(bq_dataset.client, target, "leaderboard-test", loaded["root"] / "bq")
    outcomes = writer.replace_minute_files(loaded["batches"])
    assert all(isinstance(o, bq_sink.TableWrite) for o in outcomes.values()), outcomes
    bq_dataset.proxy.clear()
    days = [D0, D1, D2]
    assert compute.leaderboard_rows_bigquery(bq_dataset.client, target, days) == compute.leaderboard_rows_duckdb(
        loaded["conn"], days
    )
    assert compute.leaderboard_rows_bigquery(
        bq_dataset.client, bq_dataset.dataset_id, [D1], 3
    ) == compute.leaderboard_rows_duckdb(loaded["conn"], [D1], 3)
    assert compute.quality_report_rows_bigquery(bq_dataset.client, target, days) == compute.quality_report_rows_duckdb(
        loaded["conn"], days
    )
    queries = bq_dataset.proxy.queries()
    assert len(queries) == 3
    assert [q.job_configuration["query"].get("maximumBytesBilled") for q in queries] == [
        "1000000000",
        None,
        "1000000000",
    ]
    for q in queries:  # every table read through the filter on the partitioning column
        assert q.sql.count("WHERE ((minute_start >= TIMESTAMP '2025-04-2") == q.sql.count(
            f"FROM `{bq_dataset.dataset_id}."
        )


# ------------------------------------------------------------------------------------------------
# The page, Markdown and the terminal
# ------------------------------------------------------------------------------------------------

VOID = {"meta", "br", "hr", "img", "input", "link", "wbr"}


class Structure(html.parser.HTMLParser):
    """What a page holds, and whether its elements nest (each end tag closes the innermost open one)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.decl, self.open, self.problems = None, [], []
        self.elements: list[tuple[str, dict, tuple[str, ...]]] = []  # (tag, attrs, section ids around it)
        self.sections: list[str] = []

    def handle_decl(self, decl):
        self.decl = decl

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.elements.append((tag, attrs, tuple(self.sections)))
        if tag == "section":
            self.sections.append(attrs.get("id", ""))
        if tag not in VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs), tuple(self.sections)))

    def handle_endtag(self, tag):
        if not self.open or self.open[-1] != tag:
            self.problems.append(f"</{tag}> closes <{self.open[-1] if self.open else None}>")
            return
        self.open.pop()
        if tag == "section":
            self.sections.pop()


def parse(text: str) -> Structure:
    s = Structure()
    s.feed(text)
    s.close()
    assert s.problems == [] and s.open == []
    return s


BUILT = datetime(2025, 4, 25, 6, 0, 0, tzinfo=UTC)


def test_the_page_has_a_sortable_table_per_metric_the_charts_the_failures_and_the_build_time(loaded):
    board = compute.leaderboard_rows_duckdb(loaded["conn"], [D1, D2])
    quality = compute.quality_report_rows_duckdb(loaded["conn"], [D1, D2])
    text = page.render_html(board, quality, BUILT)
    s = parse(text)
    assert s.decl == "DOCTYPE html" and text.startswith("<!DOCTYPE html>")
    assert [a.get("lang") for t, a, _ in s.elements if t == "html"] == ["en"]
    assert [a.get("charset") for t, a, _ in s.elements if t == "meta" and "charset" in a] == ["utf-8"]
    tables = [a["data-metric"] for t, a, _ in s.elements if t == "table" and a.get("class") == "sortable"]
    assert tables == list(compute.METRICS)
    for metric in compute.METRICS:
        rows = [a for t, a, where in s.elements if t == "tr" and "data-day" in a and f"metric-{metric}" in where]
        assert len(rows) == sum(r["metric"] == metric for r in board)
        svgs = [t for t, _, where in s.elements if t == "svg" and f"metric-{metric}" in where]
        assert len(svgs) == (metric in compute.TIMED_METRICS)
    assert [a["datetime"] for t, a, _ in s.elements if t == "time"] == ["2025-04-25T06:00:00+00:00"]
    assert "2025-04-25 06:00:00 UTC" in text
    # Numbers sort by their data-value, not by their formatted text.
    assert '<td class="num" data-value="47000">47,000</td>' in text
    # Failures per team: NANO's nanoseconds from 14:02, BRAVO's broken work reports.
    quality_cells = [a for t, a, where in s.elements if "quality" in where]
    assert quality_cells and f"{NANO_FROM} line" in text and f"erasure_root={BROKEN_HEX}" in text
    # Nothing from the network: links are in-page anchors, nothing has a src, the only URL is SVG's namespace.
    for t, a, _ in s.elements:
        assert "src" not in a and not any(k in a for k in ("action", "xlink:href")), (t, a)
        assert a.get("href", "#").startswith("#"), (t, a)
    assert set(re.findall(r"https?://[^\"' )]*", text)) == {"http://www.w3.org/2000/svg"}
    assert "<link" not in text and "url(" not in text and "@import" not in text


def test_the_page_escapes_what_the_telemetry_says():
    row = {
        "day": D1,
        "team": '<script>alert("x")</script>',
        "metric": "block_author",
        "values": 10,
        "median_us": 50_000,
        "p90_us": 60_000,
        "min_us": 40_000,
        "max_us": 70_000,
        "rank": 1,
        "flag": None,
    }
    text = page.render_html([row], [], "2025-04-25T06:00:00Z")
    assert "<script>alert" not in text and "&lt;script&gt;alert(&quot;x&quot;)" in text
    parse(text)


def test_the_chart_is_a_line_per_team_over_the_days(loaded, tmp_path):
    board = compute.leaderboard_rows_duckdb(loaded["conn"], [D0, D1, D2])
    svg = ET.fromstring(page.chart_svg(board, "block_author"))  # well-formed XML, so usable as an image
    ns = {"s": "http://www.w3.org/2000/svg"}
    teams = {g.get("data-team"): g for g in svg.iterfind("s:g", ns)}
    assert sorted(teams) == ["ALPHA", "BRAVO", "CHARLIE", "DELTA", "FEW", "FEWNANO", "NANO"]
    assert [len(teams[t].findall("s:circle", ns)) for t in ("ALPHA", "BRAVO", "NANO", "DELTA")] == [3, 2, 2, 1]
    assert [len(teams[t].findall("s:polyline", ns)) for t in ("ALPHA", "DELTA")] == [1, 0]
    labels = [t.text for t in svg.iterfind("s:text", ns)]
    assert {D0, D1, D2} <= set(labels) and "1 s" in labels
    image = page.chart_markdown(board, "block_author")
    assert image.startswith("![block_author: median per team per day](data:image/svg+xml;base64,")
    assert base64.b64decode(image.split(",", 1)[1][:-1]).decode() == page.chart_svg(board, "block_author")
    path = page.write_chart_svg(board, "refine", tmp_path / "charts" / "refine.svg")
    assert path.read_text() == page.chart_svg(board, "refine")


def test_markdown_table_ranks_the_latest_day(loaded):
    board = compute.leaderboard_rows_duckdb(loaded["conn"], [D1])
    assert page.markdown_table(board, "block_author") == "\n".join([
        f"**block_author** on {D1}: time to author a block and compute its state root (blocks.elapsed)",
        "",
        "| # | team | median µs | p90 µs | values |",
        "|--:|:--|--:|--:|--:|",
        "| 1 | ALPHA | 47,000 | 91,000 | 15 |",
        "| 2 | BRAVO | 70,000 | 100,000 | 10 |",
        "| 2 | CHARLIE | 70,000 | 74,000 | 11 |",
        "| 4 | DELTA | 500,000 | 500,000 | 10 |",
        "",
        "Not ranked: FEW (too_few_values), FEWNANO (unit_suspect), NANO (unit_suspect)",
    ])  # fmt: skip
    assert page.markdown_table(compute.leaderboard_rows_duckdb(loaded["conn"], [D1, D2]), "block_author").startswith(
        f"**block_author** on {D2}"
    )
    assert page.markdown_table(board, "ticket").splitlines()[-1] == "Not ranked: FEW (too_few_values)"
    assert page.markdown_table([], "refine") == "No refine rows."


def test_format_table_for_the_terminal(loaded):
    board = compute.leaderboard_rows_duckdb(loaded["conn"], [D1])
    assert terminal.format_table(board, "work_reports") == "\n".join([
        f"work_reports on {D1}",
        "rank  team     values  flag",
        "   1  BRAVO        12",
        "   2  ALPHA        10",
        "   2  CHARLIE      10",
        "   -  FEW           1  too_few_values",
    ])  # fmt: skip
    lines = terminal.format_table(board, "assurance").splitlines()
    assert lines[1].split() == ["rank", "team", "median", "µs", "p90", "µs", "min", "µs", "max", "µs", "values", "flag"]
    assert lines[2].split() == ["1", "ALPHA", "5,040", "5,080", "5,000", "5,090", "10"]
    assert lines[3].split() == ["-", "MILLI", "7", "11", "3", "12", "10", "unit_suspect"]
    with pytest.raises(KeyError, match="known: block_author"):
        terminal.format_table(board, "gas")
