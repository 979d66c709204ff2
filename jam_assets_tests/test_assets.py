"""The assets on a real Dagster instance: one partition, a range in one run, re-materialization."""

import hashlib
import shutil
from datetime import UTC

import dagster as dg
import duckdb
import pytest

from jam_assets.core import schema
from jam_assets.core.generator import TINY, Generator
from jam_assets.defs.assets import minute_file_tables
from jam_assets.defs.partitions import minute_files

from .helpers import read_jsonl, sample_line

pytestmark = pytest.mark.slow  # a Dagster instance, a server or a subprocess: not in `make test-fast`

RANGE = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")
KEYS = ["2025/04/23/0600", "2025/04/23/0601", "2025/04/23/0602"]


@pytest.fixture
def logs(settings):
    gen = Generator(TINY, seed=11)
    from datetime import datetime

    for key in KEYS:
        gen.write_minute(settings.log_root, datetime.strptime(key, "%Y/%m/%d/%H%M").replace(tzinfo=UTC))
    # One of each reconstructed type and a bad line in the first minute.
    extra = b"".join(sample_line(t) + b"\n" for t in ("131", "141", "133", "135", "143")) + b"{broken\n"
    with (settings.log_root / f"{KEYS[0]}.log").open("ab") as f:
        f.write(extra)
    return settings.log_root


def duck(settings, sql):
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def run(instance, resources, **kwargs):
    result = dg.materialize([minute_file_tables], instance=instance, resources=resources, **kwargs)
    assert result.success
    return result


def raw_log_events(result):
    return {
        e.partition: {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("raw_log")
    }


def test_one_partition_then_a_range_in_one_run(settings, resources, logs):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(minute_files.name, KEYS)
        single = run(instance, resources, partition_key=KEYS[0])
        meta = raw_log_events(single)[KEYS[0]]
        data = (logs / f"{KEYS[0]}.log").read_bytes()
        assert meta["sha256"] == hashlib.sha256(data).hexdigest()
        assert meta["bytes"] == len(data)
        assert meta["lines"] == data.count(b"\n")
        assert meta["rejected_lines"] == 1
        assert meta["lines_by_msg_type"]["ticket (131)"] == 1 and meta["lines_by_msg_type"]["unreadable"] == 1
        assert list(meta["lines_by_msg_type"])[:2] == ["statistics (13)", "block (128)"]

        export = settings.export_root
        for table in schema.ALL_TABLES:
            assert (export / table / f"{KEYS[0]}.jsonl").exists(), table
            assert not (export / table / f"{KEYS[1]}.jsonl").exists()
        (rejected,) = read_jsonl(export / "rejected_lines" / f"{KEYS[0]}.jsonl")
        assert (rejected["reason"], rejected["raw"]) == ("invalid_json", "{broken")
        tickets = read_jsonl(export / "tickets" / f"{KEYS[0]}.jsonl")
        assert [t["attempt"] for t in tickets] == [0]

        ranged = run(instance, resources, tags={RANGE[0]: KEYS[0], RANGE[1]: KEYS[2]})
        assert len(instance.get_runs()) == 2
        raw = raw_log_events(ranged)
        assert sorted(raw) == KEYS
        # Each minute file's own figures, in a range run too (add_partition_metadata).
        for key in KEYS:
            data = (logs / f"{key}.log").read_bytes()
            assert (raw[key]["bytes"], raw[key]["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
        rows = {
            (e.asset_key.path[-1], e.partition): e.materialization.metadata["rows"].value
            for e in ranged.get_asset_materialization_events()
            if e.asset_key.path[-1] != "raw_log"
        }
        assert [rows["rejected_lines", k] for k in KEYS] == [1, 0, 0]
        assert [rows["tickets", k] for k in KEYS] == [1, 0, 0]
        assert len(rows) == 12 * len(KEYS)
        # A range run records every check on each minute file, with that minute's own figures: here
        # only the first minute fails any (its reconstructed samples carry times of another day).
        checks = ranged.get_asset_check_evaluations()
        assert len(checks) == 36 * len(KEYS) and {c.partition for c in checks} == set(KEYS)
        assert sorted((c.asset_key.path[-1], c.check_name, c.partition) for c in checks if not c.passed) == [
            (table, "time_in_window", KEYS[0])
            for table in sorted(["tickets", "workpackages", "segments", "services", "assurances"])
        ]
        assert {c.metadata["failing_rows"].value for c in checks if not c.passed} == {1}
        # The single-minute run before it recorded all 36 checks on that minute.
        assert {c.partition for c in single.get_asset_check_evaluations()} == {KEYS[0]}
        assert len(single.get_asset_check_evaluations()) == 36
        for key in KEYS:
            blocks = read_jsonl(export / "blocks" / f"{key}.jsonl")
            assert len(blocks) == 10 and {b["minute_file"] for b in blocks} == {key}
        assert duck(settings, "SELECT minute_file, count(*) FROM blocks GROUP BY 1 ORDER BY 1") == [
            (k, 10) for k in KEYS
        ]
        assert duck(settings, "SELECT count(*) FROM validatorstatistics") == [(180,)]
        assert duck(settings, "SELECT count(*), min(line_no) FROM rejected_lines") == [(1, rejected["line_no"])]
        # Types in the warehouse come from schema/, not from inference.
        types = dict(
            duck(settings, "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'blocks'")
        )
        assert (types["time"], types["slot"], types["elapsed"], types["parent"]) == (
            "TIMESTAMP",
            "BIGINT",
            "BIGINT",
            "VARCHAR",
        )
        assert duck(settings, "SELECT count(*) FROM blocks WHERE team = 'Jam-Duna'")[0][0] > 0


def test_rematerializing_replaces_and_is_byte_identical(settings, resources, logs):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(minute_files.name, KEYS)
        tags = {RANGE[0]: KEYS[0], RANGE[1]: KEYS[2]}
        run(instance, resources, tags=tags)
        before = {p: p.read_bytes() for p in settings.export_root.rglob("*.jsonl")}
        counts = {t: duck(settings, f"SELECT count(*) FROM {t}")[0][0] for t in schema.ALL_TABLES}
        assert len(before) == len(KEYS) * len(schema.ALL_TABLES)
        run(instance, resources, tags=tags)
        run(instance, resources, partition_key=KEYS[1])
        after = {p: p.read_bytes() for p in settings.export_root.rglob("*.jsonl")}
        assert after == before
        assert {t: duck(settings, f"SELECT count(*) FROM {t}")[0][0] for t in schema.ALL_TABLES} == counts
        assert not any((settings.export_root / ".staging").iterdir()), "staging files were left behind"


def test_a_grown_file_replaces_its_rows(settings, resources, logs):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(minute_files.name, KEYS)
        run(instance, resources, partition_key=KEYS[1])
        with (logs / f"{KEYS[1]}.log").open("ab") as f:
            f.write(sample_line("128") + b"\n")
        run(instance, resources, partition_key=KEYS[1])
        assert len(read_jsonl(settings.export_root / "blocks" / f"{KEYS[1]}.jsonl")) == 11
        assert duck(settings, "SELECT count(*) FROM blocks") == [(11,)]


def test_subset_materializes_only_the_selected_table(settings, resources, logs):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(minute_files.name, KEYS)
        result = run(instance, resources, partition_key=KEYS[0], selection=["tickets"])
        assert {e.asset_key.path[-1] for e in result.get_asset_materialization_events()} == {"tickets"}
        assert sorted(p.name for p in settings.export_root.iterdir() if not p.name.startswith(".")) == [
            "jam.duckdb",
            "tickets",
        ]


def test_a_vanished_file_leaves_its_outputs_alone(settings, resources, logs):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(minute_files.name, KEYS)
        run(instance, resources, partition_key=KEYS[2])
        exported = (settings.export_root / "blocks" / f"{KEYS[2]}.jsonl").read_bytes()
        shutil.move(logs / f"{KEYS[2]}.log", logs / "elsewhere.txt")
        run(instance, resources, partition_key=KEYS[2])
        assert (settings.export_root / "blocks" / f"{KEYS[2]}.jsonl").read_bytes() == exported
        assert duck(settings, "SELECT count(*) FROM blocks") == [(10,)]


@pytest.mark.slow
def test_materializing_raw_log_alone_makes_the_tables_follow(settings, resources, logs):
    """The UI's Assets > raw_log > Materialize: the automation requests the tables of exactly those
    minute files; after a run that did raw_log and the tables together, nothing is requested."""
    from jam_assets.definitions import build_defs

    defs = build_defs(resources)
    tables = {dg.AssetKey(t) for t in schema.ALL_TABLES}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(minute_files.name, KEYS)
        run(instance, resources, partition_key=KEYS[0])  # the sensor's kind of run: everything
        cursor = dg.evaluate_automation_conditions(defs, instance).cursor
        run(instance, resources, partition_key=KEYS[1], selection=["raw_log"])
        result = dg.evaluate_automation_conditions(defs, instance, cursor=cursor)
        requested = {(k, p) for k in tables for p in result.get_requested_partitions(k)}
        assert requested == {(k, KEYS[1]) for k in tables}
        assert result.get_num_requested(dg.AssetKey("raw_log")) == 0
        again = dg.evaluate_automation_conditions(defs, instance, cursor=result.cursor)
        assert again.total_requested == 0


@pytest.mark.slow
def test_a_downstream_asset_reads_a_table_back_through_its_io_manager(settings, resources, logs):
    """load_input: the rows of the requested minute files, from the warehouse, as a DataFrame in schema order."""
    import pandas as pd

    seen = {}

    @dg.asset(partitions_def=minute_files, ins={"blocks": dg.AssetIn()})
    def blocks_per_team(blocks: pd.DataFrame) -> None:
        seen["frame"] = blocks

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(minute_files.name, KEYS)
        run(instance, resources, partition_key=KEYS[1])
        dg.materialize(
            [minute_file_tables, blocks_per_team],
            instance=instance,
            resources=resources,
            partition_key=KEYS[1],
            selection=[blocks_per_team],
        )
    frame = seen["frame"]
    assert list(frame.columns) == list(schema.column_names("blocks"))
    exported = read_jsonl(settings.export_root / "blocks" / f"{KEYS[1]}.jsonl")
    assert len(frame) == len(exported) == 10 and set(frame["minute_file"]) == {KEYS[1]}
    assert list(frame["line_no"]) == [r["line_no"] for r in exported]
