"""Production: the JSONL exports, then BigQuery (dataset `crypto_jam` by default).

Per run and table: one load job of all the run's minute files into a staging table whose name is
unique per run and that expires after a day, then one MERGE that replaces exactly those minute
files' rows in the destination, atomically:

    MERGE dest T USING staging S ON FALSE
    WHEN NOT MATCHED BY SOURCE AND T.minute_file IN UNNEST(@minute_files) THEN DELETE
    WHEN NOT MATCHED BY TARGET THEN INSERT ROW

Load jobs count against the staging tables' names (1,500 per table per day), never the
destination's; DML counts against no daily quota. At most one step writes at a time (the
`jam_warehouse` pool), well under BigQuery's two mutating statements per table. Destination tables
are created from schema/*.json, partitioned by DAY on `time` (rejected_lines, which has no time, by
ingestion day) and clustered by `minute_file` and `team`; a schema that drifted is reported.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
from dagster_gcp import BigQueryResource
from google.api_core import exceptions as gexc
from google.cloud import bigquery

from ..core import schema
from .io_managers import TableExportsIOManager
from .settings import JamSettings

STAGING_HOURS = 24


class SchemaDrift(RuntimeError):
    pass


class JamBigQueryResource(BigQueryResource):
    """dagster-gcp's BigQueryResource, plus an endpoint override for emulators and offline tests."""

    api_endpoint: str | None = None

    @contextlib.contextmanager
    def get_client(self) -> Iterator[bigquery.Client]:
        if not self.api_endpoint:
            with super().get_client() as client:
                yield client
            return
        from google.auth.credentials import AnonymousCredentials

        yield bigquery.Client(project=self.project, location=self.location, credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": self.api_endpoint})


def schema_fields(table: str) -> list[bigquery.SchemaField]:
    return [bigquery.SchemaField(c.name, c.type, mode=c.mode, description=c.description) for c in schema.columns(table)]


def destination_table(project: str, dataset: str, table: str) -> bigquery.Table:
    t = bigquery.Table(f"{project}.{dataset}.{table}", schema=schema_fields(table))
    if any(c.name == "time" for c in schema.columns(table)):
        t.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY, field="time")
        t.clustering_fields = ["minute_file", "team"]
    else:
        t.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY)
        t.clustering_fields = ["minute_file"]
    return t


def ensure_table(client: bigquery.Client, project: str, dataset: str, table: str) -> None:
    """Create the table if it is missing; if it exists, its columns must match schema/<table>.json."""
    wanted = destination_table(project, dataset, table)
    try:
        existing = client.get_table(wanted.reference)
    except gexc.NotFound:
        try:
            client.create_table(wanted)
            return
        except gexc.Conflict:  # created meanwhile by another run
            existing = client.get_table(wanted.reference)
    have = [(f.name, f.field_type, f.mode) for f in existing.schema]
    want = [(c.name, c.type, c.mode) for c in schema.columns(table)]
    if have != want:
        raise SchemaDrift(
            f"BigQuery table {project}.{dataset}.{table} has columns {have}, but schema/{table}.json says {want}. "
            "Migrate the table (or drop it and re-run its minute files); nothing was loaded."
        )


def merge_sql(project: str, dataset: str, table: str, staging: str) -> str:
    return (
        f"MERGE `{project}.{dataset}.{table}` T\n"
        f"USING `{project}.{dataset}.{staging}` S\n"
        "ON FALSE\n"
        "WHEN NOT MATCHED BY SOURCE AND T.minute_file IN UNNEST(@minute_files) THEN DELETE\n"
        "WHEN NOT MATCHED BY TARGET THEN INSERT ROW"
    )


def staging_name(table: str, run_id: str, minute_files: list[str]) -> str:
    digest = hashlib.sha1("\n".join(minute_files).encode()).hexdigest()[:10]
    return f"_staging_{table}_{run_id.replace('-', '')[:12]}_{digest}"


class _Concatenated(io.RawIOBase):
    """The run's JSONL files as one readable stream, so the load job uploads them without a copy."""

    def __init__(self, paths: list[Path]):
        self._paths = iter(paths)
        self._current = None
        self.size = sum(p.stat().st_size for p in paths)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while True:
            if self._current is None:
                path = next(self._paths, None)
                if path is None:
                    return 0
                self._current = path.open("rb")
            n = self._current.readinto(buffer)
            if n:
                return n
            self._current.close()
            self._current = None


def replace_minute_files(client: bigquery.Client, project: str, dataset: str, table: str, run_id: str,
                         minute_files: list[str], paths: list[Path]) -> dict[str, object]:
    ensure_table(client, project, dataset, table)
    staging = staging_name(table, run_id, minute_files)
    staging_table = bigquery.Table(f"{project}.{dataset}.{staging}", schema=schema_fields(table))
    staging_table.expires = datetime.now(timezone.utc) + timedelta(hours=STAGING_HOURS)
    client.create_table(staging_table, exists_ok=True)
    try:
        stream = _Concatenated(paths)
        if stream.size:
            job_config = bigquery.LoadJobConfig(
                source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
                schema=schema_fields(table),
                write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            )
            client.load_table_from_file(io.BufferedReader(stream), staging_table.reference, size=stream.size,
                                        job_config=job_config).result()
        query = client.query(
            merge_sql(project, dataset, table, staging),
            job_config=bigquery.QueryJobConfig(
                query_parameters=[bigquery.ArrayQueryParameter("minute_files", "STRING", minute_files)]
            ),
        )
        query.result()
        affected = query.num_dml_affected_rows
    finally:
        client.delete_table(staging_table.reference, not_found_ok=True)
    return {"bigquery_table": f"{project}.{dataset}.{table}", "bigquery_dml_affected_rows": affected or 0,
            "bigquery_loaded_bytes": stream.size}


class BigQueryTablesIOManager(TableExportsIOManager):
    """JSONL exports, then the same minute files replaced in BigQuery (see the module docstring)."""

    bigquery: JamBigQueryResource
    dataset: str = "crypto_jam"

    def load_warehouse(self, context: dg.OutputContext, table: str, published: dict[str, Path]) -> dict[str, object]:
        if not published:
            return {}
        keys = list(published)
        with self.bigquery.get_client() as client:
            return replace_minute_files(client, self.bigquery.project, self.dataset, table, context.run_id,
                                        keys, [published[k] for k in keys])


def production_resources(settings: JamSettings) -> dict[str, object]:
    """Resources for DAGSTER_DEPLOYMENT=production; every secret and project setting is a dg.EnvVar."""
    settings.export_root.mkdir(parents=True, exist_ok=True)
    bq_kwargs: dict[str, object] = {"project": dg.EnvVar("JAM_BQ_PROJECT")}
    if os.environ.get("JAM_BQ_LOCATION"):
        bq_kwargs["location"] = dg.EnvVar("JAM_BQ_LOCATION")
    if os.environ.get("JAM_BQ_CREDENTIALS_B64"):
        # Base64 of a service-account key; otherwise application-default credentials
        # (GOOGLE_APPLICATION_CREDENTIALS=/path/key.json, or the metadata server).
        bq_kwargs["gcp_credentials"] = dg.EnvVar("JAM_BQ_CREDENTIALS_B64")
    if os.environ.get("JAM_BQ_API_ENDPOINT"):
        bq_kwargs["api_endpoint"] = dg.EnvVar("JAM_BQ_API_ENDPOINT")
    from .dune import dune_resources

    return {
        "settings": settings,
        "table_io_manager": BigQueryTablesIOManager(
            settings=settings,
            bigquery=JamBigQueryResource(**bq_kwargs),
            dataset=os.environ.get("JAM_BQ_DATASET") or "crypto_jam",
        ),
        **dune_resources(),
    }
