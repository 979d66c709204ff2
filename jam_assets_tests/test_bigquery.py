"""The production path against a real BigQuery REST server (bqemulator behind the harness proxy,
see bigquery_emulator.py): the real google-cloud-bigquery client, real SQL execution, every table
compared row by row and column by column with the JSONL exports."""

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
from jam_assets.defs.assets import minute_file_tables
from jam_assets.defs.partitions import minute_files, range_tags
from jam_assets.defs.resources import resources_for
from jam_assets.sinks import bigquery as bq_sink

from .bigquery_emulator import (  # noqa: F401 (fixtures)
    backend_error,
    bigquery_emulator,
    bigquery_error,
    bq,
    bq_dataset,
    concurrent_update_error,
    load_job,
    query_job,
    rate_limit_error,
)
from .helpers import PROJECT, read_jsonl, sample_json, sample_line, write_minute

pytestmark = pytest.mark.slow  # a Dagster instance, a server or a subprocess: not in `make test-fast`

KEY = "2025/04/23/0600"
KEYS = ["2025/04/23/0600", "2025/04/23/0601"]


@pytest.fixture
def production(bq_dataset, settings, monkeypatch):
    """Production resources as an operator configures them, pointed at the emulator."""
    for name, value in {
        "DAGSTER_DEPLOYMENT": "production",
        "JAM_LOG_DIR": settings.log_dir,
        "JAM_EXPORT_DIR": settings.export_dir,
        "JAM_BQ_PROJECT": bq_dataset.project,
        "JAM_BQ_DATASET": bq_dataset.dataset,
        "JAM_BQ_API_ENDPOINT": bq_dataset.emulator.url,
        "JAM_BQ_ANONYMOUS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("JAM_BQ_CREDENTIALS_B64", "GOOGLE_APPLICATION_CREDENTIALS", "DUNE_API_KEY", "JAM_ALERT_WEBHOOK"):
        monkeypatch.delenv(name, raising=False)
    return resources_for()


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def materialize(instance, resources, keys, **kwargs):
    registered = set(instance.get_dynamic_partitions(minute_files.name))
    instance.add_dynamic_partitions(minute_files.name, [k for k in keys if k not in registered])
    tags = range_tags(keys[0], keys[-1]) if len(keys) > 1 else {}
    partition = {"partition_key": keys[0]} if len(keys) == 1 else {}
    return dg.materialize(
        [minute_file_tables], instance=instance, resources=resources, tags=tags, **partition, **kwargs
    )


def block_lines(key: str, n: int, team: str = "JAMDUNA") -> list[bytes]:
    when = datetime.strptime(key, "%Y/%m/%d/%H%M").replace(tzinfo=UTC)
    lines = []
    for i in range(n):
        line = sample_json("128")
        line["time"] = when.replace(second=5 * i).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"
        line["metadata"] = f"team={team}|codec_len=304"
        lines.append(orjson.dumps(line))
    return lines


def exported(settings, table: str) -> list[dict]:
    rows = []
    for path in sorted((settings.export_root / table).rglob("*.jsonl")):
        rows.extend(read_jsonl(path))
    return rows


def _order(table: str) -> str:
    index = {"validatorstatistics": ", validator_id", "corestatistics": ", core", "servicestatistics": ", service_id"}
    return "minute_file, line_no" + index.get(table, "")


def stored(client, dataset_id: str, table: str) -> list[dict]:
    """The table's rows as the exports write them (TIMESTAMP as `YYYY-MM-DDTHH:MM:SS.ffffffZ`)."""
    rows = client.query(f"SELECT * FROM `{dataset_id}.{table}` ORDER BY {_order(table)}").result()
    out = []
    for row in rows:
        item = {}
        for name, value in row.items():
            item[name] = (
                value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if isinstance(value, datetime) else value
            )
        out.append(item)
    return out


def assert_bigquery_equals_exports(settings, bq_env) -> None:
    for table in schema.ALL_TABLES:
        expected = sorted(exported(settings, table), key=lambda r: tuple(r[c] for c in _order(table).split(", ")))
        assert stored(bq_env.client, bq_env.dataset_id, table) == expected, table


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


def test_a_statement_over_the_byte_limit_fails_its_table_at_once_and_says_why(
    settings, production, instance, bq_dataset
):
    write_minute(settings.log_root, KEY, block_lines(KEY, 2) + [sample_line("131")])
    bq_dataset.proxy.fail_next(
        query_job("MERGE", contains=".blocks`"),
        bigquery_error(
            400, "bytesBilledLimitExceeded", "Query exceeded limit for bytes billed: 1000. 10485760 or higher required."
        ),
        at="result",
    )
    result = materialize(instance, production, [KEY], raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_failure_data.error.message.endswith(
        f"BigQuery {bq_dataset.table_id('blocks')}: bytesBilledLimitExceeded: Query exceeded limit for bytes "
        "billed: 1000. 10485760 or higher required. (the statement would bill more than JAM_BQ_MAX_BYTES_BILLED = "
        f"{bq_sink.DEFAULT_MAXIMUM_BYTES_BILLED:,} bytes; raise it if that is expected)\n"
    )
    # Not retried, by the writer or by Dagster; the other tables were written.
    merges = [r for r in bq_dataset.proxy.queries() if r.sql.startswith("MERGE") and ".blocks`" in r.sql]
    assert len(merges) == 1
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
    assert len(stored(bq_dataset.client, bq_dataset.dataset_id, "tickets")) == 1
    assert stored(bq_dataset.client, bq_dataset.dataset_id, "blocks") == []


def test_rate_limits_and_backend_errors_are_retried_by_the_writer(settings, production, instance, bq_dataset):
    write_minute(settings.log_root, KEY, block_lines(KEY, 3))
    faults = [
        bq_dataset.proxy.fail_next(load_job(), rate_limit_error()),
        bq_dataset.proxy.fail_next(query_job("MERGE", contains=".blocks`"), backend_error(503)),
        bq_dataset.proxy.fail_next(query_job("MERGE", contains=".blocks`"), backend_error(500), at="result"),
    ]
    result = materialize(instance, production, [KEY], selection=["blocks"])
    assert result.success and all(f.exhausted for f in faults)
    (blocks,) = [e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "blocks"]
    # The 503 on the MERGE's request is retried by the client itself; the other two by the writer.
    assert blocks.materialization.metadata["warehouse_write"].value["bigquery_retries"] == 2
    assert len(stored(bq_dataset.client, bq_dataset.dataset_id, "blocks")) == 3


def test_a_write_still_failing_after_the_writers_retries_is_retried_by_dagster(
    settings, production, instance, bq_dataset, monkeypatch
):
    """The step's RetryPolicy: BigQuery down for longer than the writer waits fails the attempt, and
    Dagster runs the step again (after 30 s, exponential, with jitter; not waited for here)."""
    from jam_assets.defs.assets import RETRY_POLICY

    monkeypatch.setenv("JAM_BQ_RETRY_SECONDS", "1")  # the writer gives up after a second
    resources = resources_for()
    write_minute(settings.log_root, KEY, block_lines(KEY, 3))
    down = bq_dataset.proxy.fail_next(
        query_job("MERGE", contains=".blocks`"), backend_error(500), at="result", times=10**6
    )
    asked = []

    def calculate_delay(policy, attempt):  # when Dagster schedules the retry, BigQuery is back
        asked.append((policy, attempt))
        bq_dataset.proxy.clear()
        return 0

    monkeypatch.setattr(dg.RetryPolicy, "calculate_delay", calculate_delay)

    result = materialize(instance, resources, [KEY], selection=["blocks"])

    assert result.success
    assert len(down.hits) >= 1
    assert len([e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]) == 1
    assert asked == [(RETRY_POLICY, 1)]
    assert (RETRY_POLICY.max_retries, RETRY_POLICY.delay) == (2, 30)
    assert len(stored(bq_dataset.client, bq_dataset.dataset_id, "blocks")) == 3  # once, not once per attempt


def test_a_run_writes_its_tables_side_by_side_on_one_client_and_looks_each_table_up_once(
    settings, production, instance, bq_dataset, monkeypatch
):
    """One client for a run's writes, the tables written concurrently (two of them meet at a barrier
    that a one-after-another writer would never pass), and each destination table looked up once
    per process, not once per run."""
    import threading

    monkeypatch.setattr(bq_sink, "TABLES", bq_sink.TableSetup())  # this process has looked no table up yet
    clients = []
    original_init = bigquery.Client.__init__

    def counting_init(self, *args, **kwargs):
        clients.append(threading.current_thread().name)
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(bigquery.Client, "__init__", counting_init)
    meet = threading.Barrier(2, timeout=30)
    original_write = bq_sink.BigQueryWriter._write_table

    def write_table(self, table, files, had_rows):
        if table in ("blocks", "tickets"):
            meet.wait()  # raises BrokenBarrierError after 30 s if the other table is not being written
        return original_write(self, table, files, had_rows)

    monkeypatch.setattr(bq_sink.BigQueryWriter, "_write_table", write_table)
    for key in KEYS:
        write_minute(settings.log_root, key, block_lines(key, 2) + [sample_line("131")])

    writes, lookups = [], []
    for key in KEYS:
        clients.clear()
        bq_dataset.proxy.clear()
        result = materialize(instance, production, [key], selection=["blocks", "tickets"])
        assert result.success
        writes.append(len(clients))
        lookups.append(
            sorted(
                (r.path.rsplit("/", 1)[-1], r.status)
                for r in bq_dataset.proxy.requests
                if r.method == "GET" and r.path.endswith(("/tables/blocks", "/tables/tickets"))
            )
        )
        metadata = {
            e.asset_key.path[-1]: e.materialization.metadata["warehouse_write"].value
            for e in result.get_asset_materialization_events()
        }
        assert {t: (m["rows"], m["bigquery_seconds"] > 0) for t, m in metadata.items()} == {
            "blocks": (2, True),
            "tickets": (1, True),
        }

    # The first run looks each table up (not there: created); every run reads its row count after the MERGE.
    assert lookups == [
        [("blocks", 200), ("blocks", 404), ("tickets", 200), ("tickets", 404)],
        [("blocks", 200), ("tickets", 200)],
    ]
    assert writes == [1, 1]


def test_a_serialization_failure_on_the_first_merge_is_retried(settings, production, instance, bq_dataset):
    write_minute(settings.log_root, KEY, block_lines(KEY, 3))
    fault = bq_dataset.proxy.fail_next(
        query_job("MERGE", contains=".blocks`"),
        concurrent_update_error(f"{bq_dataset.project}:{bq_dataset.dataset}.blocks"),
        at="result",
    )
    result = materialize(instance, production, [KEY])
    assert result.success
    assert fault.exhausted
    merges = [r for r in bq_dataset.proxy.queries() if r.sql.startswith("MERGE") and ".blocks`" in r.sql]
    assert len(merges) == 2  # the failed one, then its retry under a new job id
    blocks = next(e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "blocks")
    assert blocks.materialization.metadata["warehouse_write"].value["bigquery_retries"] == 1
    assert_bigquery_equals_exports(settings, bq_dataset)


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


def test_a_table_made_by_bq_mk_is_refused_with_what_differs(settings, production, instance, bq_dataset):
    """`bq mk --table dataset.tickets schema/tickets.json` makes an unpartitioned table."""
    bq_dataset.client.create_table(
        bigquery.Table(bq_dataset.table_id("tickets"), schema=bq_sink.schema_fields("tickets"))
    )
    write_minute(settings.log_root, KEY, block_lines(KEY, 2) + [sample_line("131")])
    result = materialize(instance, production, [KEY], raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    table = f"{bq_dataset.project}.{bq_dataset.dataset}.tickets"
    assert (
        f"BigQuery {table}: BigQuery table {table} differs from schema/tickets.json: partitioning is none, "
        "the pipeline needs DAY on minute_start; clustering is none, the pipeline needs minute_start, team. "
        f"Nothing was written to it. To rebuild it as the schema says, drop it (bq rm -f -t "
        f"{bq_dataset.project}:{bq_dataset.dataset}.tickets)"
    ) in message
    # The other tables were written, and their exports published; the refused table kept none.
    assert [r["line_no"] for r in stored(bq_dataset.client, bq_dataset.dataset_id, "blocks")] == [1, 2]
    assert (settings.export_root / "blocks" / f"{KEY}.jsonl").exists()
    assert not (settings.export_root / "tickets" / f"{KEY}.jsonl").exists()
    materialized = {e.asset_key.path[-1]: e for e in result.get_asset_materialization_events()}
    assert "tickets" not in materialized
    # Which target holds what, in the run's metadata: on the failed table's failure, and on every table written.
    written = sorted(t for t in schema.ALL_TABLES if t != "tickets")
    run_tables = {"written": written, "not_written": ["tickets"]}
    failed = failure.step_failure_data.user_failure_data.metadata
    assert failed["targets"].value == {
        "exports": "the rows from before this run",
        "BigQuery": "the rows from before this run (its write failed)",
    }
    assert failed["run_tables"].value == run_tables
    # Every table the warehouse took is recorded as materialized; the failed one, reported last, fails the step.
    tables = {t: e for t, e in materialized.items() if t != schema.RAW_LOG}
    assert sorted(tables) == written
    for table, event in tables.items():
        metadata = event.materialization.metadata
        assert metadata["targets"].value == {"exports": "this run's rows", "BigQuery": "this run's rows"}, table
        assert metadata["run_tables"].value == run_tables, table


def test_a_nullable_column_added_to_the_schema_is_added_to_the_table(
    settings, production, instance, bq_dataset, monkeypatch
):
    write_minute(settings.log_root, KEY, [sample_line("131")])
    fields = bq_sink.schema_fields("tickets")
    older = bigquery.Table(bq_dataset.table_id("tickets"), schema=fields[:-1])  # before codec_encoded was added
    spec = bq_sink.table_spec(bq_sink.BigQueryTarget(bq_dataset.project, bq_dataset.dataset), "tickets")
    older.time_partitioning, older.clustering_fields = spec.time_partitioning, spec.clustering_fields
    bq_dataset.client.create_table(older)
    monkeypatch.setattr(bq_sink, "TABLES", bq_sink.TableSetup())  # this process checked tickets before
    result = materialize(instance, production, [KEY])
    assert result.success
    assert [f.name for f in bq_dataset.client.get_table(bq_dataset.table_id("tickets")).schema][-1] == "codec_encoded"
    assert_bigquery_equals_exports(settings, bq_dataset)


def test_a_stalled_upload_is_given_up_at_the_job_timeout_and_sent_again(settings, bq_dataset, instance, production):
    from jam_assets.defs.warehouses import BigQueryWarehouse

    write_minute(settings.log_root, KEY, block_lines(KEY, 2))
    warehouse = production["table_io_manager"].warehouse
    quick = BigQueryWarehouse(bigquery=warehouse.bigquery, dataset=warehouse.dataset, job_timeout_seconds=2)
    resources = {
        **production,
        "table_io_manager": production["table_io_manager"].model_copy(update={"warehouse": quick}),
    }
    hang = bq_dataset.proxy.hang_next(load_job(), seconds=8)
    result = materialize(instance, resources, [KEY], selection=["blocks"])
    assert result.success and hang.exhausted
    # Given up after 2 s and sent again (by the client's own retry), not waited on for 8 s.
    uploads = [r for r in bq_dataset.proxy.requests if load_job()(r)]
    assert len(uploads) == 2 and uploads[0] is hang.hits[0]
    assert [r["line_no"] for r in stored(bq_dataset.client, bq_dataset.dataset_id, "blocks")] == [1, 2]


def test_a_stuck_job_is_cancelled_and_fails_the_run_with_a_message(settings, bq_dataset, instance, production):
    from jam_assets.defs.warehouses import BigQueryWarehouse

    write_minute(settings.log_root, KEY, block_lines(KEY, 1))
    warehouse = production["table_io_manager"].warehouse
    quick = BigQueryWarehouse(bigquery=warehouse.bigquery, dataset=warehouse.dataset, job_timeout_seconds=2)
    resources = {
        **production,
        "table_io_manager": production["table_io_manager"].model_copy(update={"warehouse": quick}),
    }
    bq_dataset.proxy.stall_next(query_job("MERGE", contains=".blocks`"))
    result = materialize(instance, resources, [KEY], raise_on_error=False, selection=["blocks"])
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "blocks: MERGE: job " in failure.step_failure_data.error.message
    assert (
        "did not finish within 2 s and was cancelled (JAM_BQ_JOB_TIMEOUT_SECONDS)"
        in failure.step_failure_data.error.message
    )
    assert any(r.method == "POST" and r.path.endswith("/cancel") for r in bq_dataset.proxy.requests)


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
