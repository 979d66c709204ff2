"""The warehouse resource the table IO manager writes through: DuckDB locally, BigQuery in production.

Thin by design: the SQL and the BigQuery jobs live in `jam_assets.sinks`; these resources only hold
the settings (as `dg.EnvVar`s where they come from the environment) and open the connection.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pandas as pd
from dagster_duckdb import DuckDBResource
from dagster_gcp import BigQueryResource
from google.cloud import bigquery

from ..core.quality import QualityBounds
from ..leaderboard import compute as board
from ..sinks import bigquery as bq
from ..sinks import duckdb as duck
from ..sinks.writes import Batches, TableWrite, WarehouseWriteError
from .settings import JamSettings

Outcomes = Mapping[str, TableWrite | WarehouseWriteError]
DayRows = Mapping[str, Sequence[Mapping[str, object]]]  # day (YYYY-MM-DD) -> that day's rows


class Warehouse(dg.ConfigurableResource):
    """Replaces a run's minute files in each table; each table's outcome is reported on its own."""

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """What the run's metadata and messages call it."""

    @abc.abstractmethod
    def replace_minute_files(
        self, log, run_id: str, work_dir: Path, batches: Batches, had_rows: Mapping[str, bool]
    ) -> Outcomes:
        """Each table's rows of these minute files replaced by the batches' rows."""

    def is_transient(self, exc: BaseException) -> bool:
        """Whether a failure of the whole write may pass on a later attempt."""
        return isinstance(exc, (ConnectionError, TimeoutError))

    @abc.abstractmethod
    def replace_days(self, log, run_id: str, work_dir: Path, table: str, rows_by_day: DayRows) -> TableWrite:
        """A day-partitioned table's rows of these days replaced."""

    @abc.abstractmethod
    def read_minute_files(self, table: str, minute_files: Sequence[str]) -> pd.DataFrame:
        """A table's rows of these minute files, in schema order."""

    @abc.abstractmethod
    def daily_reports(self, days: list[str], min_values: int, bounds: QualityBounds) -> tuple[list[dict], list[dict]]:
        """The leaderboard's and the quality report's rows of these days, computed in the warehouse."""


class DuckDBWarehouse(Warehouse):
    """The embedded DuckDB file, `jam.duckdb` in the export root."""

    settings: JamSettings

    @property
    def name(self) -> str:
        return "DuckDB"

    def is_transient(self, exc: BaseException) -> bool:
        # Another process held the file for longer than the connection's retries: try again later.
        return "lock" in str(exc).lower() or super().is_transient(exc)

    def replace_minute_files(self, log, run_id, work_dir, batches, had_rows) -> Outcomes:
        database = str(self.settings.duckdb_path)
        # Dagster's DuckDB resource retries the connection while another process holds the lock.
        with DuckDBResource(database=database).get_connection() as conn:
            writes = duck.replace_minute_files(conn, batches)
        for w in writes.values():
            w.metadata["duckdb_table"] = f"{database}:{w.table}"
            w.metadata["dagster/table_name"] = f"jam.main.{w.table}"
            w.metadata["duckdb_seconds"] = round(w.seconds, 3)
        return writes

    def replace_days(self, log, run_id, work_dir, table, rows_by_day) -> TableWrite:
        with DuckDBResource(database=str(self.settings.duckdb_path)).get_connection() as conn:
            return duck.replace_days(conn, table, rows_by_day)

    def read_minute_files(self, table, minute_files) -> pd.DataFrame:
        with DuckDBResource(database=str(self.settings.duckdb_path)).get_connection() as conn:
            return duck.read_minute_files(conn, table, minute_files)

    def daily_reports(self, days, min_values, bounds):
        with DuckDBResource(database=str(self.settings.duckdb_path)).get_connection() as conn:
            return (
                board.leaderboard_rows_duckdb(conn, days, min_values, bounds.elapsed),
                board.quality_report_rows_duckdb(conn, days, bounds),
            )


class JamBigQueryResource(BigQueryResource):
    """dagster-gcp's BigQueryResource, with credentials the project controls.

    `gcp_credentials` (base64 of a service-account key, from JAM_BQ_CREDENTIALS_B64) becomes
    credentials in memory, instead of a temporary key file named in the process environment; without
    it, application-default credentials apply (GOOGLE_APPLICATION_CREDENTIALS or the metadata
    server). `api_endpoint` points the client elsewhere (a regional or private endpoint, an
    emulator); `anonymous` sends no credentials at all, for an emulator only.
    """

    api_endpoint: str | None = None
    anonymous: bool = False

    @contextmanager
    def get_client(self) -> Iterator[bigquery.Client]:
        credentials = None
        if self.anonymous:
            from google.auth.credentials import AnonymousCredentials

            credentials = AnonymousCredentials()
        elif self.gcp_credentials:
            credentials = bq.credentials_from_base64(self.gcp_credentials)
        options = {"api_endpoint": self.api_endpoint} if self.api_endpoint else None
        client = bigquery.Client(
            project=self.project, location=self.location, credentials=credentials, client_options=options
        )
        try:
            yield client
        finally:
            client.close()


class BigQueryWarehouse(Warehouse):
    """BigQuery: `dataset` in the client's project; see jam_assets/sinks/bigquery.py for how a run writes."""

    bigquery: JamBigQueryResource
    dataset: str
    maximum_bytes_billed: int = bq.DEFAULT_MAXIMUM_BYTES_BILLED
    job_timeout_seconds: int = int(bq.DEFAULT_JOB_TIMEOUT_SECONDS)
    retry_seconds: int = int(bq.DEFAULT_RETRY_SECONDS)
    retry_initial_seconds: float = 1.0
    partition_type: str = "DAY"  # or HOUR (JAM_BQ_PARTITION)

    @property
    def name(self) -> str:
        return "BigQuery"

    def target(self, project: str) -> bq.BigQueryTarget:
        return bq.BigQueryTarget(
            project=project,
            dataset=self.dataset,
            location=self.bigquery.location,
            maximum_bytes_billed=self.maximum_bytes_billed,
            job_timeout_seconds=self.job_timeout_seconds,
            retry_seconds=self.retry_seconds,
            retry_initial_seconds=self.retry_initial_seconds,
            partition_type=self.partition_type,
        )

    def is_transient(self, exc: BaseException) -> bool:
        return bq.is_transient(exc)

    def replace_minute_files(self, log, run_id, work_dir, batches, had_rows) -> Outcomes:
        with self.bigquery.get_client() as client:
            writer = bq.BigQueryWriter(client, self.target(client.project), run_id, work_dir, log.info)
            return writer.replace_minute_files(batches, had_rows)

    def read_minute_files(self, table, minute_files) -> pd.DataFrame:
        with self.bigquery.get_client() as client:
            return bq.read_minute_files(client, self.target(client.project), table, minute_files)

    def replace_days(self, log, run_id, work_dir, table, rows_by_day) -> TableWrite:
        with self.bigquery.get_client() as client:
            return bq.BigQueryWriter(client, self.target(client.project), run_id, work_dir, log.info).replace_days(
                table, rows_by_day
            )

    def daily_reports(self, days, min_values, bounds):
        with self.bigquery.get_client() as client:
            target = self.target(client.project)
            return (
                board.leaderboard_rows_bigquery(client, target, days, min_values, bounds.elapsed),
                board.quality_report_rows_bigquery(client, target, days, bounds),
            )
