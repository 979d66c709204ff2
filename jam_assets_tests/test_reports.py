"""The leaderboard and quality report as assets: written like the tables (DuckDB, one export per day,
the page), replaced on re-materialization, brought up to date by the sensor after minute runs."""

import base64
import json
import re
import xml.etree.ElementTree as ET

import dagster as dg
import duckdb
import orjson
import pytest

from jam_assets.definitions import build_defs
from jam_assets.defs import reports
from jam_assets.defs.assets import minute_file_tables
from jam_assets.defs.partitions import minute_files, range_tags
from jam_assets.defs.reports import daily_reports, daily_reports_sensor, days

from .helpers import read_jsonl, sample_json, write_minute

pytestmark = pytest.mark.slow  # Dagster instances

DAY = "2025-04-23"
KEYS = ["2025/04/23/0600", "2025/04/23/0601"]


def blocks(key: str, team: str, elapsed: list[int]) -> list[bytes]:
    lines = []
    for i, e in enumerate(elapsed):
        line = sample_json("128")
        line["time"] = f"{key[:10].replace('/', '-')}T{key[11:13]}:{key[13:15]}:{i:02d}.5Z"
        line["metadata"] = f"team={team}|codec_len=304"
        line["elapsed"] = e
        lines.append(orjson.dumps(line))
    return lines


def materialize_minutes(instance, resources, keys):
    registered = set(instance.get_dynamic_partitions(minute_files.name))
    instance.add_dynamic_partitions(minute_files.name, [k for k in keys if k not in registered])
    for key in keys:
        assert dg.materialize([minute_file_tables], instance=instance, resources=resources, partition_key=key).success


def materialize_day(instance, resources, day=DAY):
    if not instance.has_dynamic_partition(days.name, day):
        instance.add_dynamic_partitions(days.name, [day])
    result = dg.materialize([daily_reports], instance=instance, resources=resources, partition_key=day)
    assert result.success
    return result


def board(settings):
    return read_jsonl(settings.export_root / "leaderboard" / "2025" / "04" / "23.jsonl")


def test_a_day_is_written_like_every_table_and_replaced(settings, resources):
    write_minute(
        settings.log_root, KEYS[0], blocks(KEYS[0], "FAST", [50_000] * 10) + blocks(KEYS[0], "NANO", [4 * 10**10] * 10)
    )
    write_minute(settings.log_root, KEYS[1], blocks(KEYS[1], "SLOW", [90_000] * 10))
    with dg.instance_for_test() as instance:
        materialize_minutes(instance, resources, KEYS)
        result = materialize_day(instance, resources)
        rows = {(r["team"], r["metric"]): r for r in board(settings)}
        assert (rows["FAST", "block_author"]["rank"], rows["SLOW", "block_author"]["rank"]) == (1, 2)
        assert (rows["NANO", "block_author"]["rank"], rows["NANO", "block_author"]["flag"]) == (None, "unit_suspect")
        assert rows["FAST", "block_author"]["median_us"] == 50_000 and rows["NANO", "blocks"]["values"] == 10
        with duckdb.connect(str(settings.duckdb_path), read_only=True) as conn:
            stored = conn.execute("SELECT count(*), min(day)::VARCHAR FROM leaderboard").fetchone()
            nano = conn.execute(
                "SELECT rows_failing, severity, sample_minute_file FROM quality_report "
                "WHERE team = 'NANO' AND table_name = 'blocks' AND check_name = 'elapsed_units'"
            ).fetchall()
        assert stored == (len(rows), DAY)
        assert nano == [(10, "ERROR", KEYS[0])]
        page = (settings.export_root / "leaderboard" / "index.html").read_text()
        assert "FAST" in page and "unit_suspect" in page and "<svg" in page
        meta = next(
            e.materialization.metadata
            for e in result.get_asset_materialization_events()
            if e.asset_key.path[-1] == "leaderboard"
        )
        assert "| 1 | FAST |" in meta["leaderboard"].value.replace("  ", " ")
        assert meta["medians"].value.count("data:image/svg+xml;base64,") == 4
        assert meta["rows"].value == len(rows)

        # Late lines in one of the day's minutes: the next update of the day has the new numbers,
        # and nothing is doubled.
        with (settings.log_root / f"{KEYS[1]}.log").open("ab") as f:
            f.write(b"".join(line + b"\n" for line in blocks(KEYS[1], "FAST", [70_000] * 10)))
        materialize_minutes(instance, resources, [KEYS[1]])
        materialize_day(instance, resources)
        again = {(r["team"], r["metric"]): r for r in board(settings)}
        assert again["FAST", "blocks"]["values"] == 20 and again["FAST", "block_author"]["median_us"] == 50_000
        assert again["FAST", "block_author"]["p90_us"] == 70_000
        with duckdb.connect(str(settings.duckdb_path), read_only=True) as conn:
            assert conn.execute("SELECT count(*) FROM leaderboard").fetchone()[0] == len(again)


def chart_points(chart_md: str) -> list[set[str]]:
    """The points of each chart in the `medians` Markdown (data: URIs of SVG), as their tooltips."""
    charts = re.findall(r"\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", chart_md)
    svg = "{http://www.w3.org/2000/svg}"
    return [
        {c.findtext(f"{svg}title") or "" for c in ET.fromstring(base64.b64decode(data)).iter(f"{svg}circle")}
        for data in charts
    ]


def test_a_backfill_of_days_charts_every_day_it_computed(settings, resources):
    """Several days in one run (a backfill, `jam-etl run`): the UI's chart has each of them, though their
    exports are written only after the step."""
    keys = ["2025/04/23/0600", "2025/04/24/0600"]
    write_minute(settings.log_root, keys[0], blocks(keys[0], "FAST", [50_000] * 3))
    write_minute(settings.log_root, keys[1], blocks(keys[1], "FAST", [60_000] * 3))
    with dg.instance_for_test() as instance:
        materialize_minutes(instance, resources, keys)
        instance.add_dynamic_partitions(days.name, ["2025-04-23", "2025-04-24"])
        job = build_defs(resources).resolve_job_def("daily_reports_job")
        result = job.execute_in_process(instance=instance, tags=range_tags("2025-04-23", "2025-04-24"))
        assert result.success
        meta = [
            e.materialization.metadata
            for e in result.get_asset_materialization_events()
            if e.asset_key.path[-1] == "leaderboard"
        ][-1]
        assert meta["leaderboard"].value.startswith("Day 2025-04-24\n")
        block_author = chart_points(meta["medians"].value)[0]
        assert block_author == {"FAST 2025-04-23: median 50,000 µs", "FAST 2025-04-24: median 60,000 µs"}


def test_the_sensor_follows_minute_runs_of_a_day_at_most_every_five_minutes(settings, resources, monkeypatch):
    clock = [1_000_000.0]
    monkeypatch.setattr(reports.time, "time", lambda: clock[0])
    write_minute(settings.log_root, KEYS[0], blocks(KEYS[0], "FAST", [50_000] * 3))
    write_minute(settings.log_root, KEYS[1], blocks(KEYS[1], "FAST", [50_000] * 3))
    defs = build_defs(resources)

    def tick(cursor):
        return daily_reports_sensor(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs))

    with dg.instance_for_test() as instance:
        materialize_minutes(instance, resources, [KEYS[0]])
        first = tick(None)
        assert [r.partition_key for r in first.run_requests] == [DAY]  # the day's first update: at once
        assert [k for req in first.dynamic_partitions_requests for k in req.partition_keys] == [DAY]

        clock[0] += 60
        materialize_minutes(instance, resources, [KEYS[1]])
        held = tick(first.cursor)
        assert held.run_requests == []  # the next one waits for the five minutes
        assert json.loads(held.cursor)["pending"] == {DAY: 1_000_000.0 + 300}
        clock[0] += 240
        later = tick(held.cursor)
        assert [r.partition_key for r in later.run_requests] == [DAY]  # the last minute run is followed
        clock[0] += 600
        assert tick(later.cursor).run_requests == []  # nothing new happened


def test_the_sensor_leaves_alone_a_day_whose_reports_are_newer_than_its_runs(settings, resources):
    """`jam-etl run` makes its days' reports itself: `dagster dev` started afterwards must not make them all
    again (at 60 days of history that was 60 runs, holding the CPU the UI needed)."""
    write_minute(settings.log_root, KEYS[0], blocks(KEYS[0], "FAST", [50_000] * 3))
    write_minute(settings.log_root, KEYS[1], blocks(KEYS[1], "FAST", [50_000] * 3))
    defs = build_defs(resources)
    with dg.instance_for_test() as instance:
        materialize_minutes(instance, resources, [KEYS[0]])
        materialize_day(instance, resources)
        first = daily_reports_sensor(dg.build_sensor_context(instance=instance, definitions=defs))
        assert first.run_requests == [] and json.loads(first.cursor)["pending"] == {}

        materialize_minutes(instance, resources, [KEYS[1]])  # newer than the reports: they follow it
        second = daily_reports_sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor, definitions=defs))
        assert [r.partition_key for r in second.run_requests] == [DAY]
