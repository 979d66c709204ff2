"""The production path against a real BigQuery REST server (bqemulator behind the harness proxy,
see bigquery_emulator.py): the real google-cloud-bigquery client, real SQL execution, every table
compared row by row and column by column with the JSONL exports. Failures, retries and guards are in
test_bigquery_failures.py (a module per worker: the two run side by side)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime

import dagster as dg
import orjson
import pytest
from google.cloud import bigquery

from jam_assets.core import schema
from jam_assets.core.generator import TINY, Generator
from jam_assets.defs.resources import resources_for
from jam_assets.sinks import bigquery as bq_sink

from .bigquery_emulator import bigquery_emulator, bq, bq_dataset  # noqa: F401 (fixtures)
from .bq_production import (  # noqa: F401 (fixtures)
    KEY,
    KEYS,
    assert_bigquery_equals_exports,
    block_lines,
    exported,
    instance,
    materialize,
    production,
    stored,
)
from .helpers import PROJECT, read_jsonl, sample_json, sample_line, write_minute

pytestmark = pytest.mark.slow  # a Dagster instance, a server or a subprocess: not in `make test-fast`


def test_a_production_run_lands_every_table_exactly_as_in_the_exports(settings, production, instance, bq_dataset):
    # The bundled samples' line mix in two minute files, with every msg_type and a rejected line.
    gen = Generator(TINY, seed=5)
    for key in KEYS:
        gen.write_minute(settings.log_root, datetime.strptime(key, "%Y/%m/%d/%H%M").replace(tzinfo=UTC))
    with (settings.log_root / f"{KEYS[0]}.log").open("ab") as f:
        f.write(b"".join(sample_line(t) + b"\n" for t in ("131", "141", "133", "135", "143", "142", "255")) + b"{cut\n")
    result = materialize(instance, production, KEYS)
    assert result.success
    assert_bigquery_equals_exports(settings, bq_dataset)
    for table in schema.ALL_TABLES:
        t = bq_dataset.client.get_table(bq_dataset.table_id(table))
        assert (t.time_partitioning.type_, t.time_partitioning.field) == ("DAY", "minute_start")
        assert t.clustering_fields == ["minute_start", "reason" if table == schema.REJECTED else "team"]
        assert [(f.name, f.field_type, f.mode) for f in t.schema] == [
            (c.name, c.type, c.mode) for c in schema.columns(table)
        ]
    # Every statement that changes a destination table is pruned to the run's minutes, in both branches.
    statements = [r.sql for r in bq_dataset.proxy.queries() if r.sql.startswith(("MERGE", "DELETE"))]
    assert statements and all(
        s.count("minute_start >= @first_minute AND ") == (2 if s.startswith("MERGE") else 1) for s in statements
    )
    assert all(
        "INSERT (`minute_file`, `minute_start`" in s and "INSERT ROW" not in s
        for s in statements
        if s.startswith("MERGE")
    )
    blocks = next(e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "blocks")
    meta = {k: v.value for k, v in blocks.materialization.metadata.items()}
    write = meta["warehouse_write"]
    assert meta["warehouse"] == "BigQuery" and write["bigquery_statement"] == "MERGE"
    assert write["bigquery_rows_loaded"] == 20 and write["rows"] == 20 and write["bigquery_seconds"] >= 0
    assert (meta["rows"], meta["dagster/row_count"]) == (10, 20)  # this minute's rows; the table's after the run
    assert meta["dagster/table_name"] == bq_dataset.table_id("blocks")
    # What a downstream asset gets from the IO manager: the rows of its minute files, pruned on minute_start.
    frame = bq_sink.read_minute_files(
        bq_dataset.client, bq_sink.BigQueryTarget(bq_dataset.project, bq_dataset.dataset), "blocks", [KEYS[1]]
    )
    assert list(frame["line_no"]) == [
        r["line_no"] for r in read_jsonl(settings.export_root / "blocks" / f"{KEYS[1]}.jsonl")
    ]
    assert "T.minute_start >= @first_minute" in bq_dataset.proxy.queries()[-1].sql
    # The guards go with every job: the byte limit on every statement, the timeout on every job.
    ours = [r for r in bq_dataset.proxy.requests if r.method == "POST" and not (r.sql or "").startswith("SELECT *")]
    jobs = [r.job_configuration for r in ours if r.job_configuration]  # (SELECT *: this test's own reads)
    queries = [c["query"] for c in jobs if "query" in c]
    loads = [c for c in jobs if "load" in c]
    assert {q["query"] for q in queries} == {*statements, bq_dataset.proxy.queries()[-1].sql} and loads
    assert {(q["maximumBytesBilled"]) for q in queries} == {str(bq_sink.DEFAULT_MAXIMUM_BYTES_BILLED)}
    assert {c.get("jobTimeoutMs") for c in jobs} == {str(int(bq_sink.DEFAULT_JOB_TIMEOUT_SECONDS * 1000))}


def test_rows_per_minute_follow_the_file_through_3_1_0_and_4_rows(settings, production, instance, bq_dataset):
    log = settings.log_root / f"{KEY}.log"
    counts = []
    for n in (3, 1, 0, 4):
        write_minute(settings.log_root, KEY, block_lines(KEY, n) or [b'{"not": "a block"}'])
        assert materialize(instance, production, [KEY]).success
        rows = bq_dataset.client.query(
            f"SELECT minute_file, count(*) n FROM `{bq_dataset.dataset_id}.blocks` GROUP BY 1"
        ).result()
        counts.append({r.minute_file: r.n for r in rows})
        assert len(read_jsonl(settings.export_root / "blocks" / f"{KEY}.jsonl")) == n
    assert counts == [{KEY: 3}, {KEY: 1}, {}, {KEY: 4}]
    assert log.exists()
    assert_bigquery_equals_exports(settings, bq_dataset)


def test_the_samples_and_a_6_mib_minute_land_exactly_then_a_shrunk_file_shrinks_the_tables(
    settings, production, instance, bq_dataset
):
    """The issue's "done when": the bundled sample logs (two days, rows whose `time` strays from their
    minute) and a 6 MiB minute file (a resumable upload) land exactly as in the exports; the 6 MiB
    file shrunk to two lines brings every table down to the exports again."""
    shutil.copytree(PROJECT / "jam_assets" / "sample_logs", settings.log_root, dirs_exist_ok=True)
    big = "2025/04/23/1200"
    Generator(TINY, seed=8).write_file_of_size(
        settings.log_root / f"{big}.log", 6 * 1024 * 1024, datetime(2025, 4, 23, 12, 0, tzinfo=UTC)
    )
    keys = sorted(str(p.relative_to(settings.log_root))[: -len(".log")] for p in settings.log_root.rglob("*.log"))
    assert len(keys) == 6
    assert materialize(instance, production, keys).success
    uploads = {r.upload_type for r in bq_dataset.proxy.requests if r.upload_type}
    assert "resumable" in uploads, uploads
    assert_bigquery_equals_exports(settings, bq_dataset)
    before = len(stored(bq_dataset.client, bq_dataset.dataset_id, "validatorstatistics"))

    lines = (settings.log_root / f"{big}.log").read_bytes().splitlines(keepends=True)
    (settings.log_root / f"{big}.log").write_bytes(b"".join(lines[:2]))
    assert materialize(instance, production, [big]).success
    assert_bigquery_equals_exports(settings, bq_dataset)
    assert len(stored(bq_dataset.client, bq_dataset.dataset_id, "validatorstatistics")) < before


def test_a_minute_whose_exports_are_gone_is_still_replaced(settings, production, instance, bq_dataset):
    """Exports pruned by retention say nothing about BigQuery: a re-run that gives a table no rows still
    deletes the minute's old rows there. A new minute with no rows for a table costs no statement."""
    write_minute(settings.log_root, KEY, block_lines(KEY, 3))
    assert materialize(instance, production, [KEY]).success
    (settings.export_root / "blocks" / f"{KEY}.jsonl").unlink()  # as JAM_EXPORT_RETENTION_DAYS does
    write_minute(settings.log_root, KEY, [sample_line("131")])
    bq_dataset.proxy.clear()
    assert materialize(instance, production, [KEY]).success
    assert stored(bq_dataset.client, bq_dataset.dataset_id, "blocks") == []
    assert any(r.sql.startswith("DELETE") and ".blocks`" in r.sql for r in bq_dataset.proxy.queries())

    new = KEYS[1]
    write_minute(settings.log_root, new, [sample_line("131").replace(b"2025-04-24T23:39", b"2025-04-23T06:01")])
    bq_dataset.proxy.clear()
    assert materialize(instance, production, [new]).success
    changed = {
        r.sql.split("`")[1].rsplit(".", 1)[-1]
        for r in bq_dataset.proxy.queries()
        if r.sql.startswith(("MERGE", "DELETE"))
    }
    assert changed == {"tickets"}


def test_two_overlapping_runs_end_with_exactly_the_exports_rows(settings, production, bq_dataset, tmp_path):
    """The same minute files in two `jam-etl run` processes at once, each with its own Dagster instance
    (so no shared pool keeps their MERGEs apart): BigQuery ends exactly as the exports."""
    for key in KEYS:
        write_minute(settings.log_root, key, block_lines(key, 4))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "jam_assets.cli", "run"],
            cwd=PROJECT,
            env={**os.environ, "DAGSTER_HOME": str(tmp_path / f"home{i}")},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert_bigquery_equals_exports(settings, bq_dataset)
    assert len(stored(bq_dataset.client, bq_dataset.dataset_id, "blocks")) == 8


def test_integers_beyond_2_53_arrive_exactly(settings, production, instance, bq_dataset):
    line = sample_json("13")
    line["time"] = "2025-04-23T06:00:01.5Z"
    big = 2**53 + 1
    line["json_encoded"]["services"] = [
        {"id": 7, "record": {"accumulate_gas_used": big, "refinement_gas_used": 2**62 + 3}}
    ]
    write_minute(settings.log_root, KEY, [orjson.dumps(line)])
    assert materialize(instance, production, [KEY]).success
    (row,) = stored(bq_dataset.client, bq_dataset.dataset_id, "servicestatistics")
    assert (row["accumulate_gas_used"], row["refinement_gas_used"]) == (big, 2**62 + 3)
    loads = [r.media for r in bq_dataset.proxy.requests if r.media and b"servicestatistics" not in r.path.encode()]
    assert any(b'"accumulate_gas_used":"9007199254740993"' in m for m in loads if m)


def round_trip_shrink_and_merge_estimates(settings, resources, dataset: str) -> dict[str, int]:
    """A minute of another day, then KEY with 3 rows, then 1 (the shrink case: exactly 1 left); then
    dry runs of the MERGE a run of KEY makes, pruned on minute_start as the pipeline writes it and
    unpruned as it was before: their estimated bytes."""
    other_day = "2025/04/24/0600"
    with (
        dg.instance_for_test() as instance,
        dg.build_resources({"warehouse": resources["table_io_manager"].warehouse}) as built,  # EnvVars read
        built.warehouse.bigquery.get_client() as client,
    ):
        write_minute(settings.log_root, other_day, block_lines(other_day, 12))
        assert materialize(instance, resources, [other_day]).success
        for n in (3, 1):
            write_minute(settings.log_root, KEY, block_lines(KEY, n))
            assert materialize(instance, resources, [KEY]).success
            rows = list(client.query(f"SELECT count(*) n FROM `{dataset}.blocks` WHERE minute_file = '{KEY}'").result())
            assert rows[0].n == n
        target = built.warehouse.target(client.project)
        pruned = bq_sink.Slice.minute_files([KEY])
        estimates = {}
        for label, part in (("pruned", pruned), ("unpruned", bq_sink.Slice(pruned.keys, "TRUE", ()))):
            config = bigquery.QueryJobConfig(dry_run=True, query_parameters=list(part.parameters))
            job = client.query(bq_sink.merge_sql(target, "blocks", "blocks", part), job_config=config)
            estimates[label] = job.total_bytes_processed
        return estimates


def live_skip_reason() -> str:
    if os.environ.get("JAM_BQ_LIVE_PROJECT"):
        return ""
    if os.environ.get("JAM_BQ_PROJECT"):
        # A shell set up for production has JAM_BQ_PROJECT: the suite never writes there unasked.
        return (
            "live BigQuery test: JAM_BQ_PROJECT is set, but the test writes to a dataset; to run it, set "
            "JAM_BQ_LIVE_PROJECT (a project you may write to), JAM_BQ_LIVE_DATASET and credentials"
        )
    return (
        "live BigQuery test: set JAM_BQ_LIVE_PROJECT, JAM_BQ_LIVE_DATASET and credentials "
        "(GOOGLE_APPLICATION_CREDENTIALS or JAM_BQ_CREDENTIALS_B64)"
    )


@pytest.mark.skipif(bool(live_skip_reason()), reason=live_skip_reason() or "runs")
def test_live_bigquery_round_trip_shrink_and_pruned_cost(settings, monkeypatch, record_property):
    dataset = os.environ.get("JAM_BQ_LIVE_DATASET") or "crypto_jam_test"
    for name, value in {
        "DAGSTER_DEPLOYMENT": "production",
        "JAM_LOG_DIR": settings.log_dir,
        "JAM_EXPORT_DIR": settings.export_dir,
        "JAM_BQ_PROJECT": os.environ["JAM_BQ_LIVE_PROJECT"],
        "JAM_BQ_DATASET": dataset,
    }.items():
        monkeypatch.setenv(name, value)
    estimates = round_trip_shrink_and_merge_estimates(settings, resources_for(), dataset)
    record_property("merge_bytes_estimate", estimates)
    print(f"MERGE dry run of one minute, bytes processed: {estimates}")
    assert estimates["pruned"] < estimates["unpruned"]


def test_the_live_tests_body_runs_on_the_emulator(settings, production, bq_dataset):
    """What the live test does, on the emulator, so it cannot rot unseen (the emulator estimates 0 bytes)."""
    assert round_trip_shrink_and_merge_estimates(settings, production, bq_dataset.dataset) == {
        "pruned": 0,
        "unpruned": 0,
    }


def test_hourly_partitions_for_a_full_size_network(settings, production, instance, bq_dataset, monkeypatch):
    monkeypatch.setenv("JAM_BQ_PARTITION", "HOUR")
    write_minute(settings.log_root, KEY, block_lines(KEY, 2))
    assert materialize(instance, resources_for(), [KEY]).success
    t = bq_dataset.client.get_table(bq_dataset.table_id("blocks"))
    assert (t.time_partitioning.type_, t.time_partitioning.field) == ("HOUR", "minute_start")
    assert_bigquery_equals_exports(settings, bq_dataset)


def test_a_days_reports_land_in_bigquery_as_in_their_exports(settings, production, instance, bq_dataset):
    from jam_assets.defs.reports import daily_reports, days

    for key in KEYS:
        write_minute(settings.log_root, key, block_lines(key, 4) + block_lines(key, 2, team="COLORFULNOTION"))
    assert materialize(instance, production, KEYS).success
    instance.add_dynamic_partitions(days.name, ["2025-04-23"])
    for _ in range(2):  # a second run replaces the day: nothing doubled
        assert dg.materialize(
            [daily_reports], instance=instance, resources=production, partition_key="2025-04-23"
        ).success
    for table in ("leaderboard", "quality_report"):
        exported = read_jsonl(settings.export_root / table / "2025" / "04" / "23.jsonl")
        rows = bq_dataset.client.query(f"SELECT * FROM `{bq_dataset.dataset_id}.{table}`").result()
        got = [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()} for r in rows]
        key = lambda r: tuple(str(v) for v in r.values())
        assert sorted(got, key=key) == sorted(exported, key=key), table
        assert exported
        t = bq_dataset.client.get_table(bq_dataset.table_id(table))
        assert (t.time_partitioning.type_, t.time_partitioning.field) == ("DAY", "day")
    # The day's computation reads only that day's rows, pruned on minute_start.
    computing = [
        r.sql
        for r in bq_dataset.proxy.queries()
        if "leaderboard" not in (r.sql or "")[:40]
        and "minute_start >=" in (r.sql or "")
        and not r.sql.startswith(("MERGE", "DELETE"))
    ]
    assert computing
