"""The BigQuery emulator harness (bigquery_emulator.py) proven with the real google-cloud-bigquery
client: what the emulator does for each call this project makes, exactly, and what the proxy fixes.

These tests document behaviour for the production code's author. Where bqemulator differs from
BigQuery the test asserts what the emulator (behind the proxy) does and says so; the full list of
deviations is the docstring of jam_assets_tests/bigquery_emulator.py. In short:

- Partitioning (DAY on a TIMESTAMP column) and clustering round-trip through get_table exactly
  when the table is made with tables.insert (client.create_table). Made with DDL, the emulator
  keeps neither; the proxy patches them in from the statement (deviation 11).
- Multipart loads need the proxy (the client's ``*/*`` media type); resumable loads (files of
  5 MiB and more, google.cloud.bigquery.client._MAX_MULTIPART_SIZE) work as they are.
- MERGE ... ON FALSE with NOT MATCHED BY SOURCE ... DELETE and NOT MATCHED BY TARGET ... INSERT
  (cols) VALUES works, with IN UNNEST of ARRAY<TIMESTAMP>/ARRAY<STRING> parameters, and
  num_dml_affected_rows is deleted + inserted. INSERT ROW does not parse.
- ALTER TABLE ADD COLUMN and update_table with an appended field both work only with the proxy's
  sync (deviation 10).
- Dry runs are accepted and report 0 bytes; maximum_bytes_billed is accepted and never enforced.
- Jobs are DONE when inserted: result(timeout=...) returns at once, cancel_job finds a DONE job
  (deviation 16); proxy.stall_next holds a job RUNNING to exercise timeouts and cancels.
- Multi-statement transactions commit, and roll back on ROLLBACK or on an error.
- INT64 values beyond 2^53, quoted in NDJSON, load and read back exactly (unquoted ones too, which
  BigQuery would not: deviation 26).
- No concurrency errors happen by themselves: the proxy injects them, at insert or as the job's
  errorResult, and the client raises the google.api_core exception BigQuery's would; the client's
  own retries (DEFAULT_RETRY, job_retry) then behave as against BigQuery.

The emulator starts once per test process (about 1.5 s); the tests here take a few seconds more.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import io
import json

import pytest
from google.api_core import exceptions
from google.cloud import bigquery
from google.cloud.bigquery import retry as bigquery_retry

from jam_assets_tests.bigquery_emulator import (  # noqa: F401  (fixtures)
    PROJECT,
    backend_error,
    bigquery_emulator,
    bq,
    bq_dataset,
    concurrent_update_error,
    load_job,
    query_job,
    rate_limit_error,
)

UTC = dt.UTC
T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
T1 = dt.datetime(2024, 5, 1, 12, 1, tzinfo=UTC)
T5 = dt.datetime(2024, 5, 1, 12, 5, tzinfo=UTC)
# The client's own retry predicates with short pauses (the defaults wait about a second).
FAST_RETRY = bigquery_retry.DEFAULT_RETRY.with_delay(initial=0.01, maximum=0.05)
FAST_JOB_RETRY = bigquery_retry.DEFAULT_JOB_RETRY.with_delay(initial=0.01, maximum=0.05)
SCHEMA = [
    bigquery.SchemaField("minute_start", "TIMESTAMP", mode="REQUIRED"),
    bigquery.SchemaField("minute_file", "STRING", mode="REQUIRED"),
    bigquery.SchemaField("a", "INT64"),
    bigquery.SchemaField("b", "STRING"),
    bigquery.SchemaField("c", "FLOAT64"),
]


def _partitioned_table(bq, name: str, schema=SCHEMA) -> bigquery.Table:
    table = bigquery.Table(bq.table_id(name), schema=schema)
    table.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY, field="minute_start")
    table.clustering_fields = ["minute_file", "a"]
    return bq.client.create_table(table)


def _rows(client, sql: str, params=()) -> list[tuple]:
    job = client.query(sql, job_config=bigquery.QueryJobConfig(query_parameters=list(params)))
    return [tuple(r.values()) for r in job.result()]


def _insert(bq, table: str, rows: list[tuple]) -> None:
    values = ", ".join(f"(TIMESTAMP '{ms.isoformat()}', '{mf}', {a}, '{b}', {c})" for ms, mf, a, b, c in rows)
    bq.client.query(f"INSERT INTO `{bq.table_id(table)}` (minute_start, minute_file, a, b, c) VALUES {values}").result()


def _ndjson(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


# ----------------------------------------------------------------------------------------------
# Datasets, tables, partitioning, clustering
# ----------------------------------------------------------------------------------------------


def test_each_test_gets_a_fresh_dataset_name_and_a_client_on_the_proxy(bq):
    assert bq.dataset_id == f"{PROJECT}.{bq.dataset}"
    with pytest.raises(exceptions.NotFound):
        bq.client.get_dataset(bq.dataset_id)
    dataset = bq.create_dataset()
    assert dataset.dataset_id == bq.dataset
    assert [d.dataset_id for d in bq.client.list_datasets() if d.dataset_id == bq.dataset] == [bq.dataset]
    assert bq.client._connection.API_BASE_URL == bq.proxy.url
    assert [r.method + " " + r.path for r in bq.proxy.requests][:2] == [
        f"GET /bigquery/v2/projects/{PROJECT}/datasets/{bq.dataset}",
        f"POST /bigquery/v2/projects/{PROJECT}/datasets",
    ]


def test_partitioning_and_clustering_round_trip_through_get_table(bq_dataset):
    _partitioned_table(bq_dataset, "dest")
    table = bq_dataset.client.get_table(bq_dataset.table_id("dest"))
    assert table.time_partitioning.type_ == "DAY"
    assert table.time_partitioning.field == "minute_start"
    assert table.clustering_fields == ["minute_file", "a"]
    # Sent as INT64/FLOAT64, read back in BigQuery's legacy spelling (the proxy's doing, deviation 12).
    assert [(f.name, f.field_type, f.mode) for f in table.schema] == [
        ("minute_start", "TIMESTAMP", "REQUIRED"),
        ("minute_file", "STRING", "REQUIRED"),
        ("a", "INTEGER", "NULLABLE"),
        ("b", "STRING", "NULLABLE"),
        ("c", "FLOAT", "NULLABLE"),
    ]
    sent = bq_dataset.proxy.requests[0].json()
    assert sent["timePartitioning"] == {"type": "DAY", "field": "minute_start"}
    assert sent["clustering"] == {"fields": ["minute_file", "a"]}
    with pytest.raises(exceptions.Conflict):
        _partitioned_table(bq_dataset, "dest")


def test_ddl_partitioning_and_clustering_are_patched_in_by_the_proxy(bq_dataset):
    """The emulator drops PARTITION BY/CLUSTER BY of DDL from the table metadata (deviation 11);
    the proxy patches them in after the statement succeeds."""
    client = bq_dataset.client
    client.query(
        f"CREATE TABLE `{bq_dataset.table_id('ddl')}` (minute_start TIMESTAMP NOT NULL, minute_file STRING, n INT64) "
        "PARTITION BY TIMESTAMP_TRUNC(minute_start, DAY) CLUSTER BY minute_file, n"
    ).result()
    client.query(
        f"CREATE TABLE `{bq_dataset.table_id('ddl_date')}` (minute_start TIMESTAMP, f STRING) "
        "PARTITION BY DATE(minute_start) CLUSTER BY f OPTIONS (require_partition_filter = TRUE)"
    ).result()
    table = client.get_table(bq_dataset.table_id("ddl"))
    assert (table.time_partitioning.type_, table.time_partitioning.field) == ("DAY", "minute_start")
    assert table.clustering_fields == ["minute_file", "n"]
    assert [(f.name, f.mode) for f in table.schema] == [
        ("minute_start", "REQUIRED"),
        ("minute_file", "NULLABLE"),
        ("n", "NULLABLE"),
    ]
    table = client.get_table(bq_dataset.table_id("ddl_date"))
    assert (table.time_partitioning.type_, table.time_partitioning.field) == ("DAY", "minute_start")
    assert table.clustering_fields == ["f"]
    # require_partition_filter is stored but not enforced (deviation 19): this succeeds.
    assert _rows(client, f"SELECT count(*) FROM `{bq_dataset.table_id('ddl_date')}`") == [(0,)]


def test_missing_dataset_is_bigquery_404_everywhere(bq):
    client, ds = bq.client, bq.dataset
    expected = f"Not found: Dataset {PROJECT}:{ds}"
    with pytest.raises(exceptions.NotFound) as got:
        client.get_dataset(bq.dataset_id)
    assert got.value.message.endswith(expected)
    with pytest.raises(exceptions.NotFound) as got:  # the emulator answers 500 here (deviation 2)
        client.create_table(bigquery.Table(bq.table_id("t"), schema=SCHEMA))
    assert got.value.message.endswith(expected)
    assert got.value.errors[0]["reason"] == "notFound"
    body = bq.proxy.requests[-1]
    assert body.status == 404
    with pytest.raises(exceptions.NotFound) as got:  # the emulator answers an empty list (deviation 3)
        list(client.list_tables(bq.dataset_id))
    assert got.value.message.endswith(expected)
    with pytest.raises(exceptions.NotFound) as got:  # the emulator says accessDenied (deviation 4)
        client.query(f"SELECT * FROM `{bq.table_id('t')}`").result()
    assert got.value.errors[0] == {"reason": "notFound", "message": f"{expected} was not found in location US"}
    with pytest.raises(exceptions.NotFound):  # jobs.query (deviation 6)
        client.query_and_wait(f"SELECT * FROM `{bq.table_id('t')}`")
    bq.create_dataset()
    with pytest.raises(exceptions.NotFound) as got:
        client.get_table(bq.table_id("nope"))
    assert got.value.message.endswith(f"Not found: Table {PROJECT}:{ds}.nope")
    with pytest.raises(exceptions.NotFound) as got:
        client.query(f"SELECT * FROM `{bq.table_id('nope')}`").result()
    assert got.value.errors[0]["message"] == f"Not found: Table {PROJECT}:{ds}.nope was not found in location US"


# ----------------------------------------------------------------------------------------------
# Loads
# ----------------------------------------------------------------------------------------------


def test_multipart_load_of_a_small_ndjson_file(bq_dataset):
    _partitioned_table(bq_dataset, "dest")
    data = _ndjson(
        [
            {"minute_start": "2024-05-01T12:00:00Z", "minute_file": "f1", "a": 1, "b": "x", "c": 0.5},
            {"minute_start": "2024-05-01T12:01:00Z", "minute_file": "f2", "a": 2, "b": None, "c": None},
            {"minute_start": "2024-05-01 12:02:00+00:00", "minute_file": "f3", "a": "3", "b": "z", "c": 1e10},
        ]
    )
    config = bigquery.LoadJobConfig(
        source_format="NEWLINE_DELIMITED_JSON", schema=SCHEMA, write_disposition="WRITE_APPEND"
    )
    job = bq_dataset.client.load_table_from_file(
        io.BytesIO(data), bq_dataset.table_id("dest"), job_config=config, size=len(data), job_id="load_small_1"
    )
    job.result(timeout=30)
    assert (job.job_id, job.state, job.error_result, job.output_rows) == ("load_small_1", "DONE", None, 3)
    [upload] = [r for r in bq_dataset.proxy.requests if r.upload_type]
    assert upload.upload_type == "multipart"
    assert upload.media == data
    assert b"content-type: */*" in upload.body  # what the emulator refuses and the proxy rewrites
    assert upload.job_configuration["load"]["sourceFormat"] == "NEWLINE_DELIMITED_JSON"
    assert _rows(
        bq_dataset.client, f"SELECT minute_start, minute_file, a, b, c FROM `{bq_dataset.table_id('dest')}` ORDER BY a"
    ) == [(T0, "f1", 1, "x", 0.5), (T1, "f2", 2, None, None), (T0 + dt.timedelta(minutes=2), "f3", 3, "z", 1e10)]
    assert bq_dataset.client.get_table(bq_dataset.table_id("dest")).num_rows == 3
    with pytest.raises(exceptions.Conflict):  # the same job id again: BigQuery's 409 (deviation 9)
        bq_dataset.client.load_table_from_file(
            io.BytesIO(data), bq_dataset.table_id("dest"), job_config=config, size=len(data), job_id="load_small_1"
        )
    assert bq_dataset.client.get_job("load_small_1").output_rows == 3  # the caller's id (deviation 8)


def test_resumable_load_of_a_6_mib_file(bq_dataset, tmp_path):
    from google.cloud.bigquery import client as client_module

    assert client_module._MAX_MULTIPART_SIZE == 5 * 1024 * 1024
    _partitioned_table(bq_dataset, "dest")
    path = tmp_path / "big.ndjson"
    n = 40_000
    with path.open("wb") as f:
        for i in range(n):
            f.write(
                json.dumps(
                    {
                        "minute_start": f"2024-05-01T12:{i % 60:02d}:00Z",
                        "minute_file": f"f{i % 7}",
                        "a": i,
                        "b": "x" * 120,
                        "c": i / 4,
                    }
                ).encode()
                + b"\n"
            )
    size = path.stat().st_size
    assert size >= 6 * 1024 * 1024
    config = bigquery.LoadJobConfig(source_format="NEWLINE_DELIMITED_JSON", schema=SCHEMA)
    with path.open("rb") as f:
        job = bq_dataset.client.load_table_from_file(
            f, bq_dataset.table_id("dest"), job_config=config, job_id="load_big_1"
        )
    job.result(timeout=60)
    assert (job.job_id, job.output_rows) == ("load_big_1", n)
    start, put = [r for r in bq_dataset.proxy.requests if r.upload_type]
    assert (start.method, start.upload_type, put.method, put.upload_type) == ("POST", "resumable", "PUT", "resumable")
    assert len(put.media) == size and put.headers["content-range"] == f"bytes 0-{size - 1}/{size}"
    assert _rows(
        bq_dataset.client,
        f"SELECT count(*), sum(a), count(DISTINCT minute_file), max(minute_start) FROM `{bq_dataset.table_id('dest')}`",
    ) == [(n, n * (n - 1) // 2, 7, T0 + dt.timedelta(minutes=59))]


def test_int64_above_2_to_the_53_quoted_in_ndjson_reads_back_exactly(bq_dataset):
    schema = [bigquery.SchemaField("k", "STRING"), bigquery.SchemaField("n", "INT64")]
    bq_dataset.client.create_table(bigquery.Table(bq_dataset.table_id("big"), schema=schema))
    values = [9007199254740993, 2**63 - 1, -(2**63), 12345678901234567]
    data = _ndjson([{"k": f"k{i}", "n": str(v)} for i, v in enumerate(values)])
    config = bigquery.LoadJobConfig(source_format="NEWLINE_DELIMITED_JSON", schema=schema)
    bq_dataset.client.load_table_from_file(
        io.BytesIO(data), bq_dataset.table_id("big"), job_config=config, size=len(data)
    ).result()
    assert _rows(bq_dataset.client, f"SELECT n FROM `{bq_dataset.table_id('big')}` ORDER BY k") == [
        (v,) for v in values
    ]
    assert [r["n"] for r in bq_dataset.client.list_rows(bq_dataset.table_id("big"), selected_fields=schema)] and sorted(
        r["n"] for r in bq_dataset.client.list_rows(bq_dataset.table_id("big"))
    ) == sorted(values)
    assert _rows(
        bq_dataset.client,
        f"SELECT n FROM `{bq_dataset.table_id('big')}` WHERE n = @n",
        [bigquery.ScalarQueryParameter("n", "INT64", 9007199254740993)],
    ) == [(9007199254740993,)]


# ----------------------------------------------------------------------------------------------
# Queries, MERGE, DDL
# ----------------------------------------------------------------------------------------------


def test_array_string_and_array_timestamp_parameters_in_unnest(bq_dataset):
    _partitioned_table(bq_dataset, "dest")
    _insert(
        bq_dataset,
        "dest",
        [(T0, "f1", 1, "x", 1.0), (T0, "f2", 2, "x", 2.0), (T1, "f1", 3, "x", 3.0), (T5, "f3", 4, "x", 4.0)],
    )
    params = [
        bigquery.ArrayQueryParameter("minute_starts", "TIMESTAMP", [T0, T5]),
        bigquery.ArrayQueryParameter("minute_files", "STRING", ["f1", "f3"]),
    ]
    sql = (
        f"SELECT a FROM `{bq_dataset.table_id('dest')}` WHERE minute_start IN UNNEST(@minute_starts) "
        "AND minute_file IN UNNEST(@minute_files) ORDER BY a"
    )
    assert _rows(bq_dataset.client, sql, params) == [(1,), (4,)]
    assert (
        _rows(bq_dataset.client, sql, [bigquery.ArrayQueryParameter("minute_starts", "TIMESTAMP", []), params[1]]) == []
    )
    sent = bq_dataset.proxy.queries()[-2]
    assert sent.parameter("minute_files") == ["f1", "f3"]
    assert [dt.datetime.fromisoformat(v) for v in sent.parameter("minute_starts")] == [T0, T5]


def test_merge_replaces_one_minute_file_and_counts_affected_rows(bq_dataset):
    client = bq_dataset.client
    dest, staging = bq_dataset.table_id("dest"), bq_dataset.table_id("staging")
    _partitioned_table(bq_dataset, "dest")
    _partitioned_table(bq_dataset, "staging")
    _insert(
        bq_dataset,
        "dest",
        [(T0, "f1", 1, "old", 1.0), (T0, "f2", 2, "other file", 2.0), (T1, "f1", 3, "other minute", 3.0)],
    )
    _insert(
        bq_dataset,
        "staging",
        [(T0, "f1", 10, "new", 10.0), (T0, "f1", 11, "new", 11.0), (T5, "f1", 12, "outside the minutes", 12.0)],
    )
    merge = (
        f"MERGE `{dest}` T USING `{staging}` S ON FALSE\n"
        "WHEN NOT MATCHED BY SOURCE AND T.minute_start IN UNNEST(@minute_starts) "
        "AND T.minute_file IN UNNEST(@minute_files) THEN DELETE\n"
        "WHEN NOT MATCHED BY TARGET AND S.minute_start IN UNNEST(@minute_starts) THEN "
        "INSERT (minute_start, minute_file, a, b, c) VALUES (S.minute_start, S.minute_file, S.a, S.b, S.c)"
    )
    params = [
        bigquery.ArrayQueryParameter("minute_starts", "TIMESTAMP", [T0]),
        bigquery.ArrayQueryParameter("minute_files", "STRING", ["f1"]),
    ]
    job = client.query(merge, job_config=bigquery.QueryJobConfig(query_parameters=params))
    job.result()
    assert (job.statement_type, job.num_dml_affected_rows, job.error_result) == ("MERGE", 3, None)
    assert _rows(client, f"SELECT minute_start, minute_file, a, b FROM `{dest}` ORDER BY a") == [
        (T0, "f2", 2, "other file"),
        (T1, "f1", 3, "other minute"),
        (T0, "f1", 10, "new"),
        (T0, "f1", 11, "new"),
    ]
    # Run again: same result, nothing duplicated (the MERGE replaces the minute file's rows).
    job = client.query(merge, job_config=bigquery.QueryJobConfig(query_parameters=params))
    job.result()
    assert job.num_dml_affected_rows == 4
    assert _rows(client, f"SELECT count(*) FROM `{dest}`") == [(4,)]
    # What a production test asserts on the recording: every MERGE carries the partition filter.
    merges = [r for r in bq_dataset.proxy.queries() if r.sql.startswith("MERGE")]
    assert len(merges) == 2
    assert all(
        "T.minute_start IN UNNEST(@minute_starts)" in r.sql and r.parameter("minute_files") == ["f1"] for r in merges
    )
    # INSERT ROW and INSERT VALUES without a column list do not parse (deviation 20).
    with pytest.raises(exceptions.BadRequest) as got:
        client.query(f"MERGE `{dest}` T USING `{staging}` S ON FALSE WHEN NOT MATCHED THEN INSERT ROW").result()
    assert got.value.errors[0]["reason"] == "invalidQuery"


def test_dml_statements_report_affected_rows(bq_dataset):
    client, dest = bq_dataset.client, bq_dataset.table_id("dest")
    _partitioned_table(bq_dataset, "dest")
    results, counts = [], []
    for sql in (
        f"INSERT INTO `{dest}` (minute_start, minute_file, a) VALUES (TIMESTAMP '2024-05-01 12:00:00+00', 'f', 1), "
        "(TIMESTAMP '2024-05-01 12:00:00+00', 'f', 2)",
        f"UPDATE `{dest}` SET b = 'u' WHERE a = 2",
        f"DELETE FROM `{dest}` WHERE minute_start = TIMESTAMP '2024-05-01 12:00:00+00'",
    ):
        job = client.query(sql)
        job.result()
        results.append((job.statement_type, job.num_dml_affected_rows))
        counts.append(client.get_table(dest).num_rows)  # the emulator's own numRows ignores DML (deviation 15)
    assert results == [("INSERT", 2), ("UPDATE", 1), ("DELETE", 2)]
    assert counts == [2, 2, 0]


def test_alter_table_add_column_then_schema_read_back(bq_dataset):
    client, dest = bq_dataset.client, bq_dataset.table_id("dest")
    _partitioned_table(bq_dataset, "dest")
    _insert(bq_dataset, "dest", [(T0, "f1", 1, "x", 1.0)])
    client.query(f"ALTER TABLE `{dest}` ADD COLUMN x STRING").result()
    table = client.get_table(dest)
    assert [(f.name, f.field_type, f.mode) for f in table.schema][-2:] == [
        ("c", "FLOAT", "NULLABLE"),
        ("x", "STRING", "NULLABLE"),
    ]
    assert (table.time_partitioning.field, table.clustering_fields) == ("minute_start", ["minute_file", "a"])
    client.query(f"UPDATE `{dest}` SET x = 'filled' WHERE a = 1").result()
    assert _rows(client, f"SELECT a, x FROM `{dest}`") == [(1, "filled")]


def test_update_table_with_an_appended_nullable_field(bq_dataset):
    client, dest = bq_dataset.client, bq_dataset.table_id("dest")
    table = _partitioned_table(bq_dataset, "dest")
    _insert(bq_dataset, "dest", [(T0, "f1", 1, "x", 1.0)])
    table.schema = [
        *table.schema,
        bigquery.SchemaField("y", "INT64"),
        bigquery.SchemaField("tags", "STRING", mode="REPEATED"),
    ]
    updated = client.update_table(table, ["schema"])
    assert [f.name for f in updated.schema] == ["minute_start", "minute_file", "a", "b", "c", "y", "tags"]
    assert [(f.name, f.field_type, f.mode) for f in client.get_table(dest).schema][-2:] == [
        ("y", "INTEGER", "NULLABLE"),
        ("tags", "STRING", "REPEATED"),
    ]
    # The stored table has the columns too (the emulator alone would fail here: deviation 10).
    client.query(f"UPDATE `{dest}` SET y = 9007199254740993, tags = ['p', 'q'] WHERE a = 1").result()
    assert _rows(client, f"SELECT a, y, tags FROM `{dest}`") == [(1, 9007199254740993, ["p", "q"])]


def test_dry_run_and_maximum_bytes_billed(bq_dataset):
    client, dest = bq_dataset.client, bq_dataset.table_id("dest")
    _partitioned_table(bq_dataset, "dest")
    _insert(bq_dataset, "dest", [(T0, "f1", 1, "x", 1.0)])
    job = client.query(
        f"SELECT minute_file, a FROM `{dest}`",
        job_config=bigquery.QueryJobConfig(dry_run=True, use_query_cache=False, maximum_bytes_billed=10**9),
    )
    # Accepted; DONE at once; the schema is there; the byte estimate is always 0 (deviation 18).
    assert (job.state, job.dry_run, job.total_bytes_processed, job.statement_type) == ("DONE", True, 0, "SELECT")
    assert [(f.name, f.field_type) for f in job.schema] == [("minute_file", "STRING"), ("a", "INTEGER")]
    assert bq_dataset.proxy.requests[-1].job_configuration["dryRun"] is True
    job = client.query(f"DELETE FROM `{dest}` WHERE TRUE", job_config=bigquery.QueryJobConfig(dry_run=True))
    assert (job.state, job.statement_type, job.total_bytes_processed) == ("DONE", "DELETE", 0)
    assert _rows(client, f"SELECT count(*) FROM `{dest}`") == [(1,)]  # a dry run changes nothing
    # maximum_bytes_billed=1 would fail in BigQuery (bytesBilledLimitExceeded); here it is ignored.
    job = client.query(f"SELECT a FROM `{dest}`", job_config=bigquery.QueryJobConfig(maximum_bytes_billed=1))
    assert [tuple(r.values()) for r in job.result()] == [(1,)]
    assert (job.total_bytes_processed, job.total_bytes_billed) == (0, None)
    assert bq_dataset.proxy.queries()[-1].job_configuration["query"]["maximumBytesBilled"] == "1"


def test_result_with_timeout_and_cancel(bq_dataset):
    client, dest = bq_dataset.client, bq_dataset.table_id("dest")
    _partitioned_table(bq_dataset, "dest")
    job = client.query(f"SELECT count(*) AS n FROM `{dest}`")
    assert job.state == "DONE"  # jobs run inside jobs.insert (deviation 16)
    assert [r["n"] for r in job.result(timeout=5)] == [0]
    cancelled = client.cancel_job(job.job_id)
    assert (cancelled.job_id, cancelled.state, cancelled.error_result) == (job.job_id, "DONE", None)
    assert bq_dataset.proxy.requests[-1].path == f"/bigquery/v2/projects/{PROJECT}/jobs/{job.job_id}/cancel"


def test_transaction_scripts_commit_and_roll_back(bq_dataset):
    client, dest = bq_dataset.client, bq_dataset.table_id("dest")
    _partitioned_table(bq_dataset, "dest")
    _insert(bq_dataset, "dest", [(T0, "f1", 1, "x", 1.0), (T0, "f2", 2, "x", 2.0)])
    client.query(
        f"BEGIN TRANSACTION; DELETE FROM `{dest}` WHERE minute_file = 'f1'; "
        f"INSERT INTO `{dest}` (minute_start, minute_file, a) VALUES (TIMESTAMP '2024-05-01 12:00:00+00', 'f1', 10); "
        "COMMIT TRANSACTION;"
    ).result()
    assert _rows(client, f"SELECT a FROM `{dest}` ORDER BY a") == [(2,), (10,)]
    client.query(f"BEGIN TRANSACTION; DELETE FROM `{dest}` WHERE TRUE; ROLLBACK TRANSACTION;").result()
    assert _rows(client, f"SELECT a FROM `{dest}` ORDER BY a") == [(2,), (10,)]
    with pytest.raises(exceptions.BadRequest) as got:
        client.query(
            f"BEGIN TRANSACTION; DELETE FROM `{dest}` WHERE TRUE; SELECT ERROR('boom'); COMMIT TRANSACTION;"
        ).result()
    assert got.value.errors[0]["reason"] == "invalidQuery" and "boom" in got.value.errors[0]["message"]
    assert _rows(client, f"SELECT a FROM `{dest}` ORDER BY a") == [(2,), (10,)]


def test_query_and_wait_raises_for_a_failing_statement(bq_dataset):
    """jobs.query answers 200 with errors[] in the emulator (deviation 6): fixed to BigQuery's 400."""
    with pytest.raises(exceptions.BadRequest) as got:
        bq_dataset.client.query_and_wait("SELECT no_such_column FROM UNNEST([1]) AS x")
    assert got.value.errors[0]["reason"] == "invalidQuery"
    assert bq_dataset.proxy.requests[-1].is_jobs_query and bq_dataset.proxy.requests[-1].status == 400
    assert [tuple(r.values()) for r in bq_dataset.client.query_and_wait("SELECT 1 AS one")] == [(1,)]


# ----------------------------------------------------------------------------------------------
# Recording and faults
# ----------------------------------------------------------------------------------------------


def test_recorder_sees_headers_and_a_bearer_token(bq_dataset):
    client = bq_dataset.emulator.client(token="test-token")
    client.query("SELECT 1").result()
    insert = bq_dataset.proxy.queries()[-1]
    assert insert.headers["authorization"] == "Bearer test-token"
    assert insert.method == "POST" and insert.path == f"/bigquery/v2/projects/{PROJECT}/jobs"
    assert insert.query == {"prettyPrint": ["false"]}
    assert insert.json()["jobReference"]["projectId"] == PROJECT
    assert all(r.headers["authorization"] == "Bearer test-token" for r in bq_dataset.proxy.requests)
    bq_dataset.client.query("SELECT 1").result()  # the fixture's client: anonymous, no header
    assert "authorization" not in bq_dataset.proxy.queries()[-1].headers


def _merge_setup(bq):
    dest, staging = bq.table_id("dest"), bq.table_id("staging")
    _partitioned_table(bq, "dest")
    _partitioned_table(bq, "staging")
    _insert(bq, "dest", [(T0, "f1", 1, "old", 1.0)])
    _insert(bq, "staging", [(T0, "f1", 2, "new", 2.0)])
    merge = (
        f"MERGE `{dest}` T USING `{staging}` S ON FALSE "
        "WHEN NOT MATCHED BY SOURCE AND T.minute_file = 'f1' THEN DELETE "
        "WHEN NOT MATCHED BY TARGET THEN INSERT (minute_start, minute_file, a, b, c) "
        "VALUES (S.minute_start, S.minute_file, S.a, S.b, S.c)"
    )
    return dest, merge


def test_concurrent_update_error_in_the_jobs_error_result(bq_dataset):
    client = bq_dataset.client
    dest, merge = _merge_setup(bq_dataset)
    table = f"{PROJECT}:{bq_dataset.dataset}.dest"
    fault = bq_dataset.proxy.fail_next(query_job("MERGE"), concurrent_update_error(table), at="result")
    job = client.query(merge)
    assert job.state == "RUNNING"  # accepted, as BigQuery accepts it
    with pytest.raises(exceptions.BadRequest) as got:
        job.result()
    message = f"Could not serialize access to table {table} due to concurrent update"
    assert got.value.errors == [{"reason": "invalidQuery", "message": message}]
    assert job.error_result == {"reason": "invalidQuery", "message": message}
    assert len(fault.hits) == 1 and fault.hits[0].sql == merge
    # The client learnt of the failure from jobs.get, as from BigQuery.
    [poll] = [r for r in bq_dataset.proxy.requests if r.path.endswith(f"/jobs/{job.job_id}")]
    assert poll.method == "GET" and poll.status == 200
    # The failed job committed nothing; the next MERGE runs for real.
    assert _rows(client, f"SELECT a FROM `{dest}`") == [(1,)]
    job = client.query(merge)
    job.result()
    assert job.num_dml_affected_rows == 2 and _rows(client, f"SELECT a FROM `{dest}`") == [(2,)]


def test_concurrent_update_error_at_job_insertion(bq_dataset):
    client = bq_dataset.client
    dest, merge = _merge_setup(bq_dataset)
    bq_dataset.proxy.fail_next(query_job("MERGE"), concurrent_update_error(f"{PROJECT}:{bq_dataset.dataset}.dest"))
    with pytest.raises(exceptions.BadRequest) as got:
        client.query(merge)
    assert got.value.code == 400 and got.value.errors[0]["reason"] == "invalidQuery"
    assert "Could not serialize access to table" in got.value.errors[0]["message"]
    assert bq_dataset.proxy.requests[-1].status == 400
    assert _rows(client, f"SELECT a FROM `{dest}`") == [(1,)]
    with pytest.raises(exceptions.BadRequest):  # the same via jobs.query
        bq_dataset.proxy.fail_next(query_job("MERGE"), concurrent_update_error())
        client.query_and_wait(merge)


def test_backend_error_503_at_insertion_is_retried_by_the_client(bq_dataset):
    client = bq_dataset.client
    dest, merge = _merge_setup(bq_dataset)
    fault = bq_dataset.proxy.fail_next(query_job("MERGE"), backend_error(503))
    job = client.query(merge, retry=FAST_RETRY)  # DEFAULT_RETRY's predicate retries the insert, same job id
    job.result()
    assert len(fault.hits) == 1
    inserts = [r for r in bq_dataset.proxy.queries() if r.sql == merge]
    assert [r.status for r in inserts] == [503, 200]
    assert inserts[0].json()["jobReference"]["jobId"] == inserts[1].json()["jobReference"]["jobId"] == job.job_id
    assert _rows(client, f"SELECT a FROM `{dest}`") == [(2,)]


def test_lost_answer_is_recovered_through_the_409_without_running_twice(bq_dataset):
    client = bq_dataset.client
    dest, merge = _merge_setup(bq_dataset)
    _insert(bq_dataset, "staging", [(T0, "f1", 3, "new", 3.0)])
    bq_dataset.proxy.fail_next(query_job("MERGE"), backend_error(500), forward=True)
    job = client.query(merge, retry=FAST_RETRY)  # ran; 500; retried with the same id -> 409 -> jobs.get
    job.result()
    inserts = [r.status for r in bq_dataset.proxy.queries() if r.sql == merge]
    assert inserts == [500, 409]
    assert job.num_dml_affected_rows == 3
    assert _rows(client, f"SELECT a FROM `{dest}` ORDER BY a") == [(2,), (3,)]


def test_rate_limit_in_the_jobs_error_result_is_rerun_by_job_retry(bq_dataset):
    client = bq_dataset.client
    dest, merge = _merge_setup(bq_dataset)
    fault = bq_dataset.proxy.fail_next(query_job("MERGE"), rate_limit_error(), at="result")
    job = client.query(merge, job_retry=FAST_JOB_RETRY)
    job.result()  # client.query's job_retry re-runs a job that failed with rateLimitExceeded
    inserts = [r for r in bq_dataset.proxy.queries() if r.sql == merge]
    first, second = (r.json()["jobReference"]["jobId"] for r in inserts)
    assert len(fault.hits) == 1 and first != second and job.job_id == second
    assert _rows(client, f"SELECT a FROM `{dest}`") == [(2,)]
    # With a job id of its own the client does not re-run: the error reaches the caller.
    bq_dataset.proxy.fail_next(query_job("MERGE"), rate_limit_error(), at="result")
    with pytest.raises(exceptions.TooManyRequests) as got:  # the client maps this reason to 429
        client.query(merge, job_id="my_merge_1", job_retry=None).result()
    assert got.value.errors[0]["reason"] == "rateLimitExceeded"
    assert _rows(client, f"SELECT a FROM `{dest}`") == [(2,)]


def test_load_job_failure_in_the_error_result(bq_dataset):
    _partitioned_table(bq_dataset, "dest")
    data = _ndjson([{"minute_start": "2024-05-01T12:00:00Z", "minute_file": "f1", "a": 1}])
    config = bigquery.LoadJobConfig(source_format="NEWLINE_DELIMITED_JSON", schema=SCHEMA)
    for size in (len(data), None):  # multipart, then resumable
        bq_dataset.proxy.fail_next(load_job(), backend_error(500), at="result")
        job = bq_dataset.client.load_table_from_file(
            io.BytesIO(data), bq_dataset.table_id("dest"), job_config=config, size=size
        )
        with pytest.raises(exceptions.InternalServerError) as got:
            job.result()
        assert got.value.errors[0]["reason"] == "backendError"
    assert [r.upload_type for r in bq_dataset.proxy.requests if r.upload_type and r.method == "POST"] == [
        "multipart",
        "resumable",
    ]
    assert bq_dataset.client.get_table(bq_dataset.table_id("dest")).num_rows == 0
    job = bq_dataset.client.load_table_from_file(
        io.BytesIO(data), bq_dataset.table_id("dest"), job_config=config, size=len(data)
    )
    assert job.result().output_rows == 1


# ----------------------------------------------------------------------------------------------
# What else the production code meets
# ----------------------------------------------------------------------------------------------


def test_table_metadata_description_and_expiration(bq_dataset):
    client = bq_dataset.client
    table = bigquery.Table(
        bq_dataset.table_id("staging"),
        schema=[
            bigquery.SchemaField("minute_start", "TIMESTAMP", mode="REQUIRED", description="start of the minute file"),
            bigquery.SchemaField("ok", "BOOL"),
            bigquery.SchemaField("r", "STRUCT", fields=[bigquery.SchemaField("n", "INT64")]),
        ],
    )
    table.description = "JAM telemetry: staging"
    expires = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    table.expires = expires
    client.create_table(table)
    got = client.get_table(bq_dataset.table_id("staging"))
    assert got.description == "JAM telemetry: staging"
    assert [(f.name, f.field_type, f.description) for f in got.schema] == [
        ("minute_start", "TIMESTAMP", "start of the minute file"),
        ("ok", "BOOLEAN", None),
        ("r", "RECORD", None),
    ]
    assert [(f.name, f.field_type) for f in got.schema[2].fields] == [("n", "INTEGER")]
    # The emulator drops expirationTime; the proxy remembers it (deviation 13). Nothing expires.
    assert got.expires == expires
    assert bq_dataset.client.create_table(table, exists_ok=True).expires == expires
    client.delete_table(table, not_found_ok=True)
    client.delete_table(table, not_found_ok=True)
    with pytest.raises(exceptions.NotFound):
        client.get_table(table)


def test_what_the_emulator_does_not_check(bq_dataset):
    """Leniencies the production tests must not rely on BigQuery's strictness for (deviation 26)."""
    client, dest = bq_dataset.client, bq_dataset.table_id("dest")
    _partitioned_table(bq_dataset, "dest")
    # A NULL in a REQUIRED column: BigQuery refuses it, the emulator stores it.
    client.query(f"INSERT INTO `{dest}` (minute_file, a) VALUES ('f1', 1)").result()
    assert _rows(client, f"SELECT minute_start IS NULL FROM `{dest}`") == [(True,)]
    # NDJSON: a missing REQUIRED field and an unknown field load (BigQuery fails the job), and an
    # unquoted integer beyond 2^53 loads exactly (BigQuery's loader would read it as a double).
    data = _ndjson(
        [
            {"minute_file": "f2", "a": 2},
            {"minute_start": "2024-05-01T12:00:00Z", "minute_file": "f3", "a": 9007199254740993, "no_such_column": 1},
        ]
    )
    config = bigquery.LoadJobConfig(source_format="NEWLINE_DELIMITED_JSON", schema=SCHEMA, job_timeout_ms=60_000)
    job = client.load_table_from_file(io.BytesIO(data), dest, job_config=config, size=len(data))
    assert (job.result().output_rows, job.error_result) == (2, None)
    assert _rows(client, f"SELECT a FROM `{dest}` WHERE minute_file != 'f1' ORDER BY a") == [(2,), (9007199254740993,)]
    # Every job is in US, whatever location the client asked for.
    job = client.query("SELECT 1", location="EU", job_config=bigquery.QueryJobConfig(job_timeout_ms=60_000))
    assert (job.location, [tuple(r.values()) for r in job.result()]) == ("US", [(1,)])
    assert bq_dataset.proxy.queries()[-1].json()["jobReference"]["location"] == "EU"


def test_bad_ndjson_fails_the_load_job_with_reason_invalid(bq_dataset):
    _partitioned_table(bq_dataset, "dest")
    data = _ndjson([{"minute_start": "not a time", "minute_file": "f1"}])
    config = bigquery.LoadJobConfig(source_format="NEWLINE_DELIMITED_JSON", schema=SCHEMA)
    job = bq_dataset.client.load_table_from_file(
        io.BytesIO(data), bq_dataset.table_id("dest"), job_config=config, size=len(data)
    )
    assert job.state == "DONE" and job.error_result["reason"] == "invalid"
    with pytest.raises(exceptions.BadRequest) as got:
        job.result()
    assert got.value.errors[0]["reason"] == "invalid"
    assert got.value.errors[0]["message"].startswith("Error while reading data, error message: ")
    assert bq_dataset.client.get_table(bq_dataset.table_id("dest")).num_rows == 0


def test_parallel_clients_on_separate_tables(bq_dataset):
    """The production writer runs its tables side by side on one client: the emulator serves
    concurrent requests correctly (it serialises the writes)."""
    client = bq_dataset.client

    def write(i: int) -> tuple[int, int]:
        _partitioned_table(bq_dataset, f"dest{i}")
        _partitioned_table(bq_dataset, f"staging{i}")
        data = _ndjson(
            [{"minute_start": "2024-05-01T12:00:00Z", "minute_file": f"f{n}", "a": n} for n in range(50 + i)]
        )
        config = bigquery.LoadJobConfig(
            source_format="NEWLINE_DELIMITED_JSON", schema=SCHEMA, write_disposition="WRITE_TRUNCATE"
        )
        client.load_table_from_file(
            io.BytesIO(data), bq_dataset.table_id(f"staging{i}"), job_config=config, size=len(data)
        ).result()
        job = client.query(
            f"MERGE `{bq_dataset.table_id(f'dest{i}')}` T USING `{bq_dataset.table_id(f'staging{i}')}` S ON FALSE "
            "WHEN NOT MATCHED BY TARGET THEN INSERT (minute_start, minute_file, a) VALUES (S.minute_start, S.minute_file, S.a)"
        )
        job.result()
        return job.num_dml_affected_rows, _rows(client, f"SELECT count(*) FROM `{bq_dataset.table_id(f'dest{i}')}`")[0][
            0
        ]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert list(pool.map(write, range(4))) == [(50 + i, 50 + i) for i in range(4)]


def test_stalled_job_times_out_and_is_cancelled(bq_dataset):
    """Emulator jobs are DONE at once (deviation 16); stall_next holds one RUNNING for timeout and
    cancel paths."""
    client = bq_dataset.client
    dest, merge = _merge_setup(bq_dataset)
    bq_dataset.proxy.stall_next(query_job("MERGE"))
    job = client.query(merge, job_retry=None)
    assert (job.state, job.done()) == ("RUNNING", False)
    with pytest.raises(concurrent.futures.TimeoutError):
        job.result(timeout=0.5, job_retry=None)
    cancelled = client.cancel_job(job.job_id, location=job.location)
    assert (cancelled.state, cancelled.error_result["reason"]) == ("DONE", "stopped")
    assert (
        job.done()
        and job.cancelled()
        and job.error_result["message"] == "Job execution was cancelled: User requested cancellation"
    )
    assert _rows(client, f"SELECT a FROM `{dest}`") == [(1,)]  # it never ran


def test_stalled_job_runs_after_its_polls(bq_dataset):
    client = bq_dataset.client
    dest, merge = _merge_setup(bq_dataset)
    bq_dataset.proxy.stall_next(query_job("MERGE"), polls=2)
    job = client.query(merge, job_retry=None)
    assert job.state == "RUNNING"
    job.result(timeout=10, job_retry=None)
    assert (job.state, job.num_dml_affected_rows, job.error_result) == ("DONE", 2, None)
    polls = [r.status for r in bq_dataset.proxy.requests if r.path.endswith(f"/jobs/{job.job_id}")]
    assert polls == [200, 200]
    assert _rows(client, f"SELECT a FROM `{dest}`") == [(2,)]
    # The same through jobs.query (query_and_wait) and for a multipart load.
    bq_dataset.proxy.stall_next(query_job("SELECT"), polls=1)
    assert [tuple(r.values()) for r in client.query_and_wait(f"SELECT a FROM `{dest}`")] == [(2,)]
    bq_dataset.proxy.stall_next(load_job(), polls=1)
    data = _ndjson([{"minute_start": "2024-05-01T12:00:00Z", "minute_file": "f9", "a": 9}])
    load = client.load_table_from_file(
        io.BytesIO(data),
        dest,
        job_id="stalled_load_1",
        size=len(data),
        job_config=bigquery.LoadJobConfig(source_format="NEWLINE_DELIMITED_JSON", schema=SCHEMA),
    )
    assert load.state == "RUNNING"
    assert (load.result(timeout=10).job_id, load.output_rows) == ("stalled_load_1", 1)
    assert _rows(client, f"SELECT a FROM `{dest}` ORDER BY a") == [(2,), (9,)]
