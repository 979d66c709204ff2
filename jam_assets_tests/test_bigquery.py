"""The BigQuery path, driven through the real google-cloud-bigquery client against a local fake of
the REST calls it makes (see fakes.py for what the fake does and does not check)."""

import os

import dagster as dg
import pytest

from jam_assets.core import schema
from jam_assets.defs.assets import minute_file_tables
from jam_assets.defs.io_bigquery import BigQueryTablesIOManager, JamBigQueryResource, merge_sql
from jam_assets.defs.partitions import minute_files

from .fakes import FakeServer, bigquery_handler
from .helpers import sample_line, write_minute

KEYS = ["2025/04/23/0600", "2025/04/23/0601"]
RANGE = {"dagster/asset_partition_range_start": KEYS[0], "dagster/asset_partition_range_end": KEYS[1]}


def bq_resources(settings, url):
    return {"settings": settings, "table_io_manager": BigQueryTablesIOManager(
        settings=settings, bigquery=JamBigQueryResource(project="proj", location="EU", api_endpoint=url), dataset="crypto_jam")}


@pytest.fixture
def logs(settings):
    for key in KEYS:
        write_minute(settings.log_root, key, [sample_line("128"), sample_line("13"), sample_line("141")])


def run(settings, fake, raise_on_error=True):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(minute_files.name, KEYS)
        return dg.materialize([minute_file_tables], instance=instance, resources=bq_resources(settings, fake.url),
                              tags=RANGE, raise_on_error=raise_on_error)


def expected_fields(table):
    return [{"name": c.name, "type": c.type, "mode": c.mode, "description": c.description} for c in schema.columns(table)]


def test_tables_loads_and_merges(settings, logs):
    with FakeServer(bigquery_handler) as fake:
        assert run(settings, fake).success
        created = {r.json()["tableReference"]["tableId"]: r.json() for r in fake.requests
                   if r.method == "POST" and r.path.endswith("/datasets/crypto_jam/tables")}
        blocks = created["blocks"]
        assert blocks["schema"]["fields"] == expected_fields("blocks")
        assert blocks["timePartitioning"] == {"type": "DAY", "field": "time"}
        assert blocks["clustering"] == {"fields": ["minute_file", "team"]}
        assert created["rejected_lines"]["timePartitioning"] == {"type": "DAY"}
        assert {t for t in created if not t.startswith("_staging_")} == set(schema.ALL_TABLES)
        staging = [t for t in created if t.startswith("_staging_blocks_")]
        assert len(staging) == 1 and "expirationTime" in created[staging[0]]

        uploads = fake.state["uploads"]
        loaded = sorted(r["configuration"]["load"]["destinationTable"]["tableId"].split("_")[2] for r, _ in uploads)
        # One load job per table per run, whatever the number of minute files; none for a table
        # without rows (its MERGE still runs, to delete what those minutes had before).
        assert loaded == ["assurances", "blocks", "corestatistics", "validatorstatistics"]
        (blocks_load, data), = [(r, d) for r, d in uploads
                                if r["configuration"]["load"]["destinationTable"]["tableId"] == staging[0]]
        load = blocks_load["configuration"]["load"]
        assert load["sourceFormat"] == "NEWLINE_DELIMITED_JSON"
        assert load["writeDisposition"] == "WRITE_TRUNCATE"
        assert load["destinationTable"] == {"projectId": "proj", "datasetId": "crypto_jam", "tableId": staging[0]}
        assert load["schema"]["fields"] == expected_fields("blocks")
        exports = settings.export_root / "blocks"
        assert data == b"".join((exports / f"{k}.jsonl").read_bytes() for k in KEYS)

        queries = [r.json() for r in fake.requests if r.method == "POST" and r.path == "/bigquery/v2/projects/proj/jobs"]
        assert len(queries) == 12
        (merge,) = [q for q in queries if "`proj.crypto_jam.blocks`" in q["configuration"]["query"]["query"]]
        q = merge["configuration"]["query"]
        assert q["query"] == merge_sql("proj", "crypto_jam", "blocks", staging[0]) == (
            "MERGE `proj.crypto_jam.blocks` T\n"
            f"USING `proj.crypto_jam.{staging[0]}` S\n"
            "ON FALSE\n"
            "WHEN NOT MATCHED BY SOURCE AND T.minute_file IN UNNEST(@minute_files) THEN DELETE\n"
            "WHEN NOT MATCHED BY TARGET THEN INSERT ROW")
        assert q["useLegacySql"] is False
        assert q["queryParameters"] == [{"name": "minute_files", "parameterType": {"type": "ARRAY", "arrayType": {"type": "STRING"}},
                                         "parameterValue": {"arrayValues": [{"value": k} for k in KEYS]}}]
        assert merge["jobReference"]["location"] == "EU"
        deleted = [r.path.rsplit("/", 1)[1] for r in fake.requests if r.method == "DELETE"]
        assert staging[0] in deleted and not [t for t in fake.state["tables"] if t.startswith("_staging_")]

        # A re-run creates nothing new, and loads under a new staging name (not the destination's quota).
        before = len(fake.requests)
        assert run(settings, fake).success
        again = fake.requests[before:]
        creates = [r.json()["tableReference"]["tableId"] for r in again if r.method == "POST" and r.path.endswith("/tables")]
        assert all(t.startswith("_staging_") for t in creates) and staging[0] not in creates


def test_schema_drift_is_reported(settings, logs):
    with FakeServer(bigquery_handler) as fake:
        fields = expected_fields("tickets")[:-1]  # someone dropped codec_encoded
        fake.state["tables"] = {"tickets": {"tableReference": {"projectId": "proj", "datasetId": "crypto_jam", "tableId": "tickets"},
                                            "schema": {"fields": fields}}}
        result = run(settings, fake, raise_on_error=False)
        assert not result.success
        (failure,) = [e for e in result.all_events if e.is_step_failure]
        message = failure.step_failure_data.error.cause.message
        assert "SchemaDrift: BigQuery table proj.crypto_jam.tickets has columns" in message
        assert "but schema/tickets.json says" in message


@pytest.mark.skipif(not os.environ.get("JAM_BQ_PROJECT") or not (
    os.environ.get("GOOGLE_APPLICATION_CREDENTIALS") or os.environ.get("JAM_BQ_CREDENTIALS_B64")),
    reason="live BigQuery test: set JAM_BQ_PROJECT and GOOGLE_APPLICATION_CREDENTIALS (or JAM_BQ_CREDENTIALS_B64)")
def test_live_bigquery_round_trip(settings, logs):
    from jam_assets.defs.io_bigquery import production_resources

    dataset = os.environ.get("JAM_BQ_DATASET") or "crypto_jam_test"
    os.environ["JAM_BQ_DATASET"] = dataset
    resources = production_resources(settings)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(minute_files.name, KEYS)
        for _ in range(2):  # the second run must change nothing
            assert dg.materialize([minute_file_tables], instance=instance, resources=resources, tags=RANGE).success
    with resources["table_io_manager"].bigquery.get_client() as client:
        rows = list(client.query(f"SELECT minute_file, count(*) n FROM `{dataset}.blocks` GROUP BY 1 ORDER BY 1").result())
    assert [(r.minute_file, r.n) for r in rows] == [(k, 1) for k in KEYS]
