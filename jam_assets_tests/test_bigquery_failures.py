"""The production path when BigQuery fails or stalls, against the emulator behind the harness proxy
(faults injected at the HTTP boundary): what is retried, what fails at once and says why, what
holds what afterwards."""

from __future__ import annotations

import dagster as dg
import pytest
from google.cloud import bigquery

from jam_assets.core import schema
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
from .bq_production import (  # noqa: F401 (fixtures)
    KEY,
    KEYS,
    assert_bigquery_equals_exports,
    block_lines,
    instance,
    materialize,
    production,
    stored,
)
from .helpers import sample_line, write_minute

pytestmark = pytest.mark.slow  # a Dagster instance, a server or a subprocess: not in `make test-fast`


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


def with_job_timeout(production: dict, seconds: int) -> dict:
    """The production resources with BigQuery's job timeout (JAM_BQ_JOB_TIMEOUT_SECONDS) set to `seconds`."""
    from jam_assets.defs.warehouses import BigQueryWarehouse

    tables = production["table_io_manager"]
    quick = BigQueryWarehouse(
        bigquery=tables.warehouse.bigquery, dataset=tables.warehouse.dataset, job_timeout_seconds=seconds
    )
    return {**production, "table_io_manager": tables.model_copy(update={"warehouse": quick})}


def test_a_stalled_upload_is_given_up_at_the_job_timeout_and_sent_again(settings, bq_dataset, instance, production):
    write_minute(settings.log_root, KEY, block_lines(KEY, 2))
    resources = with_job_timeout(production, seconds=2)
    hang = bq_dataset.proxy.hang_next(load_job(), seconds=8)
    result = materialize(instance, resources, [KEY], selection=["blocks"])
    assert result.success and hang.exhausted
    # Given up after 2 s and sent again (by the client's own retry), not waited on for 8 s.
    uploads = [r for r in bq_dataset.proxy.requests if load_job()(r)]
    assert len(uploads) == 2 and uploads[0] is hang.hits[0]
    assert [r["line_no"] for r in stored(bq_dataset.client, bq_dataset.dataset_id, "blocks")] == [1, 2]


def test_a_stuck_job_is_cancelled_and_fails_the_run_with_a_message(settings, bq_dataset, instance, production):
    write_minute(settings.log_root, KEY, block_lines(KEY, 1))
    resources = with_job_timeout(production, seconds=2)
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
