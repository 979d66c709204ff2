"""BigQuery, the production warehouse: a run's minute files replace their rows, table by table.

Every table is created from schema/<table>.json, partitioned by DAY on `minute_start` (the start of
a row's minute file, FORMAT.md 4.1) and clustered by `minute_start` and `team` (`reason` for
rejected_lines). Per run and table, all tables at once on one client:

1. the table's staged rows of the run's minute files go into one newline-delimited JSON file, with
   integers beyond ±(2^53 − 1) written as strings, as BigQuery's JSON loader requires; the client
   uploads it from disk (a real, seekable file: loads of 5 MiB and more are resumable uploads);
2. one load job puts it in a staging table unique to the run (it expires after a day and is deleted
   after use), so load jobs never count against the destination's 1,500 a day;
3. one MERGE replaces exactly those minute files' rows, atomically:

       MERGE dest T USING staging S ON FALSE
       WHEN NOT MATCHED BY SOURCE AND <T.minute_start in the run's minutes> THEN DELETE
       WHEN NOT MATCHED BY TARGET AND <S.minute_start in the run's minutes> THEN INSERT (cols) VALUES (S.cols)

   Both branches carry the filter on the partitioning column, so the statement reads only the days
   of the run's minutes, whatever the rows' `time` says. A table that had no rows for these minutes
   and gets none is left alone; one that had rows and gets none gets a DELETE with the same filter.

Transient failures are retried with exponential backoff and jitter, bounded: 5xx, `rateLimitExceeded`,
`backendError`, and the 400 `invalidQuery` "Could not serialize access to table ... due to concurrent
update" that BigQuery answers when two mutating statements meet on one table. Every query carries
`maximum_bytes_billed`, and every job a timeout after which it is cancelled and the table's write
fails with a message saying so. A table whose write fails does not stop the others.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson
from google.api_core import exceptions as gexc
from google.api_core import retry as gretry
from google.cloud import bigquery

from ..core import schema
from ..core.minute_files import minute_start
from .writes import Batches, SchemaDrift, TableWrite, WarehouseWriteError

PARTITION_COLUMN = "minute_start"
STAGING_HOURS = 24
DEFAULT_MAXIMUM_BYTES_BILLED = 100 * 10**9  # 100 GB a statement; a toaster day's partition is far smaller
DEFAULT_JOB_TIMEOUT_SECONDS = 900.0
DEFAULT_RETRY_SECONDS = 600.0
BIGQUERY_SCOPE = "https://www.googleapis.com/auth/bigquery"

# BigQuery's JSON loader reads numbers as doubles: integers beyond this must be sent as strings.
JSON_SAFE_INTEGER = 2**53 - 1
_SIXTEEN_DIGITS = re.compile(rb"\d{16}")  # any integer beyond 2^53 has at least 16 digits
_CHUNK = 8 << 20

_RETRYABLE_REASONS = {"rateLimitExceeded", "backendError", "internalError", "jobRateLimitExceeded"}
# No later attempt gets past these (a guard, a bad statement, a missing or forbidden table).
_PERMANENT_REASONS = {"bytesBilledLimitExceeded", "invalid", "invalidQuery", "notFound", "accessDenied", "duplicate"}
_RETRYABLE_STATUS = (
    gexc.InternalServerError,
    gexc.BadGateway,
    gexc.ServiceUnavailable,
    gexc.GatewayTimeout,
    gexc.TooManyRequests,
)
_LEGACY_TYPES = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN"}


class JobTimeout(RuntimeError):
    """A BigQuery job that did not finish in time; it was cancelled."""


@dataclass(frozen=True)
class BigQueryTarget:
    """Where the tables live and the guards on every job."""

    project: str
    dataset: str
    location: str | None = None
    maximum_bytes_billed: int = DEFAULT_MAXIMUM_BYTES_BILLED
    job_timeout_seconds: float = DEFAULT_JOB_TIMEOUT_SECONDS
    retry_seconds: float = DEFAULT_RETRY_SECONDS  # give up on a table's transient failures after this
    retry_initial_seconds: float = 1.0
    max_concurrent_tables: int = 6
    # DAY, or HOUR for a full-size network: a MERGE reads the partitions of its minutes, so
    # hourly partitions bound what a minute costs (BigQuery allows 10,000 partitions: 416 days).
    partition_type: str = "DAY"

    def table_id(self, table: str) -> str:
        return f"{self.project}.{self.dataset}.{table}"


def credentials_from_base64(text: str):
    """Service-account credentials from a base64-encoded JSON key; the message never shows the key."""
    from google.oauth2 import service_account

    try:
        info = json.loads(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        raise ValueError("JAM_BQ_CREDENTIALS_B64 is not the base64 encoding of a JSON key file") from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise ValueError("JAM_BQ_CREDENTIALS_B64 does not hold a service-account key (its type is not service_account)")
    try:
        return service_account.Credentials.from_service_account_info(info, scopes=[BIGQUERY_SCOPE])
    except (ValueError, KeyError) as exc:
        # The library's message names missing fields, never values.
        raise ValueError(
            f"JAM_BQ_CREDENTIALS_B64: the service-account key cannot be used ({type(exc).__name__})"
        ) from None


def is_transient(exc: BaseException) -> bool:
    """Failures that a later attempt of the same statement or load can get past.

    A job's own error reaches the client as a 500 whatever its reason (the client maps reasons it
    does not know to InternalServerError), so the reason decides before the status does.
    """
    if isinstance(exc, gexc.RetryError):  # the writer's own retries ran out: Dagster's RetryPolicy is next
        return exc.cause is not None and is_transient(exc.cause)
    if isinstance(exc, gexc.GoogleAPICallError):
        reasons = {e.get("reason") for e in (exc.errors or []) if isinstance(e, dict)}
        if reasons & _RETRYABLE_REASONS or "could not serialize access" in str(exc.message).lower():
            return True
        if reasons & _PERMANENT_REASONS:
            return False
    if isinstance(exc, _RETRYABLE_STATUS):
        return True
    return isinstance(exc, (ConnectionError, TimeoutError)) and not isinstance(exc, JobTimeout)


def schema_fields(table: str) -> list[bigquery.SchemaField]:
    return [bigquery.SchemaField(c.name, c.type, mode=c.mode, description=c.description) for c in schema.columns(table)]


_DAY_CLUSTERING = {"leaderboard": ["team", "metric"], "quality_report": ["team", "table_name"]}


def clustering_fields(table: str) -> list[str]:
    if table in schema.DAY_TABLES:
        return _DAY_CLUSTERING[table]
    return [PARTITION_COLUMN, "reason" if table == schema.REJECTED else "team"]


PARTITION_TYPES = ("DAY", "HOUR")


def partitioning(target: BigQueryTarget, table: str) -> bigquery.TimePartitioning:
    """Minute-file tables on `minute_start` (DAY or HOUR); the per-day tables on their `day`."""
    if table in schema.DAY_TABLES:
        return bigquery.TimePartitioning(type_="DAY", field="day")
    return bigquery.TimePartitioning(type_=target.partition_type, field=PARTITION_COLUMN)


def table_spec(target: BigQueryTarget, table: str) -> bigquery.Table:
    t = bigquery.Table(target.table_id(table), schema=schema_fields(table))
    t.time_partitioning = partitioning(target, table)
    t.clustering_fields = clustering_fields(table)
    t.description = f"JAM telemetry: {table} (jam-etl; schema/{table}.json)"
    return t


def _field(f: bigquery.SchemaField) -> tuple[str, str, str]:
    return f.name, _LEGACY_TYPES.get(f.field_type, f.field_type), f.mode or "NULLABLE"


def _describe(f: tuple[str, str, str]) -> str:
    return f"`{f[0]} {f[1]} {f[2]}`"


def _partitioning(t: bigquery.Table) -> str:
    p = t.time_partitioning
    if p is None:
        return "none" if t.range_partitioning is None else "by integer range"
    return f"{p.type_} on {p.field or '_PARTITIONTIME (ingestion time)'}"


def compare(existing: bigquery.Table, wanted: bigquery.Table) -> tuple[list[bigquery.SchemaField], list[str]]:
    """(NULLABLE columns to append, differences that cannot be evolved) between a table and its spec."""
    have = [_field(f) for f in existing.schema]
    want = [_field(f) for f in wanted.schema]
    problems = []
    for i, h in enumerate(have):
        if i >= len(want):
            problems.append(f"column {_describe(h)} is in BigQuery but not in the schema file")
        elif h != want[i]:
            problems.append(f"column {i + 1} is {_describe(h)} in BigQuery but {_describe(want[i])} in the schema file")
    appended = list(wanted.schema[len(have) :]) if not problems else []
    for f in appended:
        if _field(f)[2] != "NULLABLE":
            problems.append(f"new column {_describe(_field(f))} is REQUIRED: BigQuery can only add NULLABLE columns")
    if _partitioning(existing) != _partitioning(wanted):
        problems.append(f"partitioning is {_partitioning(existing)}, the pipeline needs {_partitioning(wanted)}")
    if list(existing.clustering_fields or []) != list(wanted.clustering_fields or []):
        have_c = ", ".join(existing.clustering_fields or []) or "none"
        problems.append(f"clustering is {have_c}, the pipeline needs {', '.join(wanted.clustering_fields or [])}")
    return ([] if problems else appended), problems


class TableSetup:
    """Creates, checks and evolves destination tables, once per process and table."""

    def __init__(self) -> None:
        self._done: set[str] = set()
        self._lock = threading.Lock()

    def ensure(self, client: bigquery.Client, target: BigQueryTarget, table: str, log: Callable[[str], None]) -> None:
        wanted = table_spec(target, table)
        table_id = target.table_id(table)
        if table_id in self._done:
            return
        try:
            existing = client.get_table(wanted.reference)
        except gexc.NotFound:
            try:
                client.create_table(wanted)
                log(f"bigquery: created {table_id} (partitioned by {_partitioning(wanted)})")
                existing = None
            except gexc.Conflict:  # created meanwhile by another run
                existing = client.get_table(wanted.reference)
        if existing is not None:
            appended, problems = compare(existing, wanted)
            if problems:
                raise SchemaDrift(
                    f"BigQuery table {table_id} differs from schema/{table}.json: " + "; ".join(problems) + ". "
                    f"Nothing was written to it. To rebuild it as the schema says, drop it "
                    f"(bq rm -f -t {target.project}:{target.dataset}.{table}) and re-run its minute files (jam-etl run); "
                    f"a table created with `bq mk --table` alone lacks the partitioning."
                )
            if appended:
                existing.schema = list(existing.schema) + appended
                client.update_table(existing, ["schema"])
                log(f"bigquery: added column(s) {', '.join(f.name for f in appended)} to {table_id}")
        with self._lock:
            self._done.add(table_id)


TABLES = TableSetup()  # per process: a run (or jam-etl's several ranges) checks each table once


def _quote_big_integers(line: bytes) -> bytes:
    row = orjson.loads(line)
    for name, value in row.items():
        if type(value) is int and not -JSON_SAFE_INTEGER <= value <= JSON_SAFE_INTEGER:
            row[name] = str(value)
    return orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)


def write_load_file(paths: Iterable[Path], dest: Path) -> tuple[int, int]:
    """Concatenate staged JSONL files into one file BigQuery loads exactly; returns (rows, bytes).

    Chunks without a run of 16 digits are copied as they are; only lines with one are parsed, and
    their integers beyond 2^53 quoted.
    """
    rows = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("wb") as out:
        for path in paths:
            with path.open("rb") as f:
                carry = b""
                while chunk := f.read(_CHUNK):
                    chunk = carry + chunk
                    cut = chunk.rfind(b"\n") + 1
                    chunk, carry = chunk[:cut], chunk[cut:]
                    rows += chunk.count(b"\n")
                    if _SIXTEEN_DIGITS.search(chunk) is None:
                        out.write(chunk)
                        continue
                    for line in chunk.splitlines(keepends=True):
                        out.write(_quote_big_integers(line) if _SIXTEEN_DIGITS.search(line) else line)
                if carry:  # staged files end in a newline; a file that does not is not ours to fix
                    raise ValueError(f"{path} does not end in a newline")
        size = out.tell()
    return rows, size


@dataclass(frozen=True)
class Slice:
    """The rows a write replaces: some minute files (on `minute_start`) or some days (on `day`).

    `where` holds `{a}` for the table alias; it filters on the partitioning column, so a statement
    with it in both MERGE branches reads only the partitions of the slice.
    """

    keys: tuple[str, ...]
    where: str
    parameters: tuple

    @classmethod
    def minute_files(cls, minute_files: Iterable[str]) -> Slice:
        keys = tuple(sorted(minute_files))
        starts = [minute_start(k) for k in keys]
        return cls(
            keys,
            "{a}.minute_start >= @first_minute AND {a}.minute_start <= @last_minute "
            "AND {a}.minute_start IN UNNEST(@minute_starts)",
            (
                bigquery.ScalarQueryParameter("first_minute", "TIMESTAMP", starts[0]),
                bigquery.ScalarQueryParameter("last_minute", "TIMESTAMP", starts[-1]),
                bigquery.ArrayQueryParameter("minute_starts", "TIMESTAMP", starts),
            ),
        )

    @classmethod
    def days(cls, days: Iterable[str]) -> Slice:
        keys = tuple(sorted(days))
        dates = [date.fromisoformat(d) for d in keys]
        return cls(
            keys,
            "{a}.day >= @first_day AND {a}.day <= @last_day AND {a}.day IN UNNEST(@days)",
            (
                bigquery.ScalarQueryParameter("first_day", "DATE", dates[0]),
                bigquery.ScalarQueryParameter("last_day", "DATE", dates[-1]),
                bigquery.ArrayQueryParameter("days", "DATE", dates),
            ),
        )


def merge_sql(target: BigQueryTarget, table: str, staging: str, part: Slice) -> str:
    cols = schema.column_names(table)
    return (
        f"MERGE `{target.table_id(table)}` T\n"
        f"USING `{target.table_id(staging)}` S\n"
        "ON FALSE\n"
        f"WHEN NOT MATCHED BY SOURCE AND {part.where.format(a='T')} THEN DELETE\n"
        f"WHEN NOT MATCHED BY TARGET AND {part.where.format(a='S')} THEN\n"
        f"  INSERT ({', '.join(f'`{c}`' for c in cols)})\n"
        f"  VALUES ({', '.join(f'S.`{c}`' for c in cols)})"
    )


def delete_sql(target: BigQueryTarget, table: str, part: Slice) -> str:
    return f"DELETE FROM `{target.table_id(table)}` T\nWHERE {part.where.format(a='T')}"


def minute_parameters(minute_files: list[str]) -> list:
    return list(Slice.minute_files(minute_files).parameters)


def staging_name(table: str, run_id: str, minute_files: list[str]) -> str:
    digest = hashlib.sha1("\n".join(minute_files).encode()).hexdigest()[:10]
    return f"_staging_{table}_{run_id.replace('-', '')[:12]}_{digest}"


@dataclass
class _Progress:
    jobs: list[str] = field(default_factory=list)
    retries: int = 0


class BigQueryWriter:
    """Replaces a run's minute files in every table, the tables side by side on one client."""

    def __init__(
        self,
        client: bigquery.Client,
        target: BigQueryTarget,
        run_id: str,
        work_dir: Path,
        log: Callable[[str], None] = lambda message: None,
    ):
        self.client = client
        self.target = target
        self.run_id = run_id
        self.work_dir = work_dir
        self.log = log

    def replace_minute_files(
        self, batches: Batches, had_rows: Mapping[str, bool] | None = None
    ) -> dict[str, TableWrite | WarehouseWriteError]:
        """Each table's outcome. `had_rows[table]` False: the table held no rows of these minutes before."""
        had_rows = had_rows or {}
        tables = [t for t in batches if batches[t]]
        outcomes: dict[str, TableWrite | WarehouseWriteError] = {}
        workers = max(1, min(len(tables), self.target.max_concurrent_tables))
        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="bigquery") as pool:
            futures = {t: pool.submit(self._write_table, t, batches[t], had_rows.get(t, True)) for t in tables}
            for table, future in futures.items():
                try:
                    outcomes[table] = future.result()
                except Exception as exc:  # one table's failure never stops the others
                    outcomes[table] = WarehouseWriteError(
                        table,
                        f"BigQuery {self.target.table_id(table)}: {explain(exc, self.target)}",
                        transient=is_transient(exc),
                    )
        return outcomes

    def _retrying(self, what: str, progress: _Progress, fn: Callable[[], object]):
        def on_error(exc: Exception) -> None:
            progress.retries += 1
            self.log(f"bigquery: {what} failed ({type(exc).__name__}: {_first_line(exc)}); retrying")

        retry = gretry.Retry(
            predicate=is_transient,
            initial=self.target.retry_initial_seconds,
            maximum=max(self.target.retry_initial_seconds, 60.0),
            multiplier=2.0,
            timeout=self.target.retry_seconds,
            on_error=on_error,
        )
        return retry(fn)()

    def _wait(self, job, what: str) -> None:
        wait_for(self.client, job, what, self.target.job_timeout_seconds)

    def _query(self, sql: str, part: Slice, what: str, progress: _Progress) -> bigquery.QueryJob:
        config = bigquery.QueryJobConfig(
            query_parameters=list(part.parameters),
            maximum_bytes_billed=self.target.maximum_bytes_billed,
            job_timeout_ms=int(self.target.job_timeout_seconds * 1000),
        )

        def attempt() -> bigquery.QueryJob:
            job = self.client.query(sql, job_config=config, job_retry=None)
            progress.jobs.append(job.job_id or "")
            self._wait(job, what)
            return job

        job = self._retrying(what, progress, attempt)
        assert isinstance(job, bigquery.QueryJob)
        return job

    def _write_table(self, table: str, files: Mapping[str, Path], had_rows: bool) -> TableWrite:
        keys = sorted(files)
        load_file = self.work_dir / f"{table}.ndjson"
        rows, size = write_load_file([files[k] for k in keys], load_file)
        return self._replace(table, Slice.minute_files(keys), load_file, rows, size, had_rows)

    def replace_days(self, table: str, rows_by_day: Mapping[str, Sequence[Mapping[str, object]]]) -> TableWrite:
        """Replace the rows of these days of a per-day table (leaderboard, quality_report)."""
        load_file = self.work_dir / f"{table}.ndjson"
        load_file.parent.mkdir(parents=True, exist_ok=True)
        with load_file.open("wb") as out:
            for day in sorted(rows_by_day):
                for row in rows_by_day[day]:
                    out.write(_quote_big_integers(orjson.dumps(row)))
        rows = sum(len(r) for r in rows_by_day.values())
        return self._replace(table, Slice.days(rows_by_day), load_file, rows, load_file.stat().st_size, True)

    def _replace(self, table: str, part: Slice, load_file: Path, rows: int, size: int, had_rows: bool) -> TableWrite:
        started = time.monotonic()
        progress = _Progress()
        TABLES.ensure(self.client, self.target, table, self.log)
        meta: dict[str, object] = {
            "bigquery_table": self.target.table_id(table),
            "bigquery_rows_loaded": rows,
            "bigquery_bytes_loaded": size,
        }
        if rows == 0 and not had_rows:
            meta["bigquery_statement"] = "none (no rows before or now)"
        elif rows == 0:
            job = self._query(delete_sql(self.target, table, part), part, f"{table}: DELETE", progress)
            meta |= {
                "bigquery_statement": "DELETE",
                "bigquery_dml_affected_rows": job.num_dml_affected_rows or 0,
                "bigquery_bytes_billed": job.total_bytes_billed or 0,
            }
        else:
            job = self._load_and_merge(table, part, load_file, progress, meta)
            meta |= {
                "bigquery_statement": "MERGE",
                "bigquery_dml_affected_rows": job.num_dml_affected_rows or 0,
                "bigquery_bytes_billed": job.total_bytes_billed or 0,
            }
        load_file.unlink(missing_ok=True)
        meta |= {
            "bigquery_jobs": ", ".join(progress.jobs),
            "bigquery_retries": progress.retries,
            "bigquery_seconds": round(time.monotonic() - started, 2),
        }
        # The table's own row count is metadata BigQuery keeps: reading it bills nothing.
        total = self.client.get_table(self.target.table_id(table)).num_rows
        return TableWrite(table, rows, time.monotonic() - started, table_rows=total, metadata=meta)

    def _load_and_merge(
        self, table: str, part: Slice, load_file: Path, progress: _Progress, meta: dict[str, object]
    ) -> bigquery.QueryJob:
        staging_id = self.target.table_id(staging_name(table, self.run_id, list(part.keys)))
        staging = bigquery.Table(staging_id, schema=schema_fields(table))
        staging.expires = datetime.now(UTC) + timedelta(hours=STAGING_HOURS)
        self._retrying(f"{table}: create staging", progress, lambda: self.client.create_table(staging, exists_ok=True))
        try:
            config = bigquery.LoadJobConfig(
                source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
                schema=schema_fields(table),
                write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
                # A load that arrives late (its upload was given up and sent again) must not create
                # the staging table again after it was dropped: that one would never expire.
                create_disposition=bigquery.CreateDisposition.CREATE_NEVER,
                job_timeout_ms=int(self.target.job_timeout_seconds * 1000),
            )

            def load():
                with load_file.open("rb") as f:
                    # `timeout` bounds each upload request: a stalled connection is given up and
                    # the upload sent again (WRITE_TRUNCATE: a late first copy changes nothing).
                    job = self.client.load_table_from_file(
                        f,
                        staging.reference,
                        job_config=config,
                        rewind=True,
                        timeout=self.target.job_timeout_seconds,
                    )
                progress.jobs.append(job.job_id or "")
                self._wait(job, f"{table}: load")

            loading = time.monotonic()
            self._retrying(f"{table}: load", progress, load)
            meta["bigquery_load_seconds"] = round(time.monotonic() - loading, 2)
            merging = time.monotonic()
            job = self._query(merge_sql(self.target, table, staging.table_id, part), part, f"{table}: MERGE", progress)
            meta["bigquery_merge_seconds"] = round(time.monotonic() - merging, 2)
            return job
        finally:
            try:
                self.client.delete_table(staging.reference, not_found_ok=True)
            except gexc.GoogleAPICallError as exc:  # it expires by itself after a day
                self.log(f"bigquery: could not delete {staging.table_id} ({_first_line(exc)}); it expires in a day")


def wait_for(client: bigquery.Client, job, what: str, timeout_seconds: float) -> None:
    """Wait for a job within the job timeout; past it, cancel the job and fail with a message saying so.

    (The client's own `result(timeout=)` bounds each HTTP request, not the job; BigQuery also
    stops the job itself at the configured `job_timeout_ms`.)
    """
    deadline = time.monotonic() + timeout_seconds
    pause = 0.1
    while not job.done():
        if time.monotonic() >= deadline:
            try:
                client.cancel_job(job.job_id, location=job.location)
            except gexc.GoogleAPICallError:
                pass  # it stops at job_timeout_ms anyway
            raise JobTimeout(
                f"{what}: job {job.job_id} did not finish within {timeout_seconds:g} s "
                "and was cancelled (JAM_BQ_JOB_TIMEOUT_SECONDS)"
            )
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 5.0)
    job.result(**_no_job_retry(job))  # raises the job's error, if it failed


def _no_job_retry(job) -> dict[str, object]:
    # QueryJob.result re-issues failed queries by itself unless told not to; the retries here are ours.
    return {"job_retry": None} if isinstance(job, bigquery.QueryJob) else {}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:1000] if text else type(exc).__name__


def explain(exc: BaseException, target: BigQueryTarget) -> str:
    """A failure in one line: BigQuery's reason and message (a job's own error reaches the client as
    "500" whatever it was), with what to change when it is one of the guards' own."""
    errors = [e for e in getattr(exc, "errors", None) or [] if isinstance(e, dict) and e.get("reason")]
    line = f"{errors[0]['reason']}: {errors[0].get('message', '')}" if errors else _first_line(exc)
    if any(e["reason"] == "bytesBilledLimitExceeded" for e in errors):
        line += (
            f" (the statement would bill more than JAM_BQ_MAX_BYTES_BILLED = {target.maximum_bytes_billed:,} bytes;"
            " raise it if that is expected)"
        )
    return line


def read_minute_files(client: bigquery.Client, target: BigQueryTarget, table: str, minute_files: Sequence[str]):
    """The table's rows of these minute files as a pandas DataFrame, in schema order, pruned on minute_start."""
    part = Slice.minute_files(minute_files)
    names = ", ".join(f"`{n}`" for n in schema.column_names(table))
    config = bigquery.QueryJobConfig(
        query_parameters=list(part.parameters),
        maximum_bytes_billed=target.maximum_bytes_billed,
        job_timeout_ms=int(target.job_timeout_seconds * 1000),
    )
    sql = f"SELECT {names} FROM `{target.table_id(table)}` T WHERE {part.where.format(a='T')} ORDER BY minute_file, line_no"
    job = client.query(sql, job_config=config, job_retry=None)
    wait_for(client, job, f"{table}: read", target.job_timeout_seconds)
    return job.to_dataframe(create_bqstorage_client=False)
