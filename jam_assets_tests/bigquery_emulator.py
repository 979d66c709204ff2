"""A real BigQuery REST server for the tests: bqemulator 1.4.0 (its SQL run by DuckDB 1.5.5) behind
a recording, fault-injecting proxy that also makes it answer the way BigQuery does where the two
differ. The proxy is the harness boundary: clients only ever talk to it.

Install: ``scripts/ensure-bqemulator`` builds ``.venv-bqemu`` (a venv of its own, every package
pinned; the project's venv has another duckdb) and a HOME holding DuckDB's spatial extension
(from the duckdb-extension-spatial package), which the emulator loads at start and could not
download here. The fixtures run it, so a plain ``pytest`` works on a fresh machine: the first build
takes about a minute, after that it is a stamp check. The emulator starts in about 1.5 s: it binds a
free loopback port (port 0, read back from its log), gRPC likewise, with its HOME, DuckDB file and
upload staging dir in a temp folder that is removed when it stops (SIGTERM to its process group,
SIGKILL after 5 s; it also gets SIGTERM if the test process dies).

Use::

    from jam_assets_tests.bigquery_emulator import bigquery_emulator, bq, bq_dataset  # noqa: F401 (fixtures)
    from jam_assets_tests.bigquery_emulator import concurrent_update_error, query_job

    def test_it(bq_dataset):                      # `bq`: the same, dataset not created yet
        client = bq_dataset.client                # a real google.cloud.bigquery.Client -> the proxy
        bq_dataset.proxy.fail_next(query_job("MERGE"), concurrent_update_error(), at="result")
        ...                                       # run production code with `client`
        merges = [r for r in bq_dataset.proxy.queries() if r.sql.startswith("MERGE")]
        assert all("IN UNNEST(@minute_starts)" in r.sql for r in merges)

``bigquery_emulator`` (session scope) is one emulator and one proxy per test process, however many
modules import it (a process-wide singleton, stopped at exit). ``bq`` (function scope) yields a
:class:`BigQueryTestEnv`: ``client``, ``proxy`` (recording and faults cleared), ``project``, a fresh
``dataset`` name, ``dataset_id``/``table_id(name)`` ("project.dataset[.table]") and
``create_dataset()``; afterwards it deletes the dataset and fails the test if the proxy itself
broke. ``bq_dataset`` is ``bq`` with the dataset created. Outside pytest:
``with run_bigquery_emulator() as emu: client = emu.client()``. ``make_client(url, token="t")``
builds a client that sends ``Authorization: Bearer t``; the default is anonymous credentials.

Recording: ``proxy.requests`` holds every :class:`RecordedRequest` as the client sent it, before
any rewriting (method, path, query, lower-cased headers, body, the status answered), with helpers
``sql``, ``query_parameters``, ``parameter(name)``, ``job_configuration``, ``upload_type``,
``media`` (uploaded bytes); ``proxy.queries()`` lists the query-job creations.

Faults: ``proxy.fail_next(matcher, error_or_status, body=None, at=..., times=1, forward=False)``
answers the next matching request (matchers: ``query_job(prefix)``, ``load_job()``,
``request_to(method, regex)`` or any predicate on a RecordedRequest; errors:
``concurrent_update_error(table)`` 400 invalidQuery "Could not serialize access to table p:d.t due
to concurrent update", ``rate_limit_error()`` 403 rateLimitExceeded, ``backend_error(500|503)``,
``bigquery_error(status, reason, message)``). ``at="request"``: the request itself gets the error
and never reaches the emulator, unless ``forward=True``: then it runs and only the answer is
replaced (BigQuery did the work, the response was lost). ``at="result"``, for job creations
(jobs.insert, jobs.query, multipart and resumable uploads): the job is accepted as RUNNING and not
run (BigQuery commits nothing for a failed job); jobs.get then reports it DONE with the error as
``status.errorResult`` and getQueryResults answers the error, which is how BigQuery reports a DML
serialisation failure. ``proxy.stall_next(matcher, polls=None)`` accepts a job as RUNNING and keeps
it so (``job.result(timeout=...)`` expires, ``cancel_job`` stops it with reason "stopped"); with
``polls=N`` it runs for real at the Nth jobs.get. Mind the client's own retries: a 5xx or a
rateLimitExceeded answer to a request is retried by ``DEFAULT_RETRY`` (so ``times=1`` heals), and
``client.query`` re-runs a job that failed with rateLimitExceeded/backendError under a new id
unless ``job_retry=None`` or a job id is given.

Deviations of bqemulator 1.4.0 from BigQuery: the complete list, each found by running the real
google-cloud-bigquery 3.47 client against it; jam_assets_tests/test_bigquery_emulator_harness.py
pins each one it names. "Fixed": the client sees what BigQuery would send.

Fixed by the proxy
  1. Multipart loads: the client sends the media part as ``Content-Type: */*``; the emulator
     refuses it (400 "unsupported Content-Type '*/*'"). The proxy rewrites that part header to
     ``application/octet-stream``. (Resumable uploads, 5 MiB and more, are not checked.)
  2. tables.insert into a missing dataset answers 500 internalError, which the client retries for
     its whole 10-minute deadline. Any 500 under ``/datasets/{d}`` whose dataset does not exist
     becomes BigQuery's 404 ``{"error": {"code": 404, "message": "Not found: Dataset p:d",
     "errors": [{"reason": "notFound", ...}]}}``, so ``google.api_core.exceptions.NotFound``.
  3. tables.list of a missing dataset answers 200 and no tables; BigQuery: 404. Fixed likewise.
  4. A query on a table of a missing dataset fails with accessDenied ("Access Denied: Table p:d.t:
     User does not have permission ..."); BigQuery: notFound "Not found: Dataset p:d was not found
     in location US". The job's errorResult/errors are rewritten when the dataset is missing.
  5. 404 messages read ``Not found: dataset:p.d``, ``table:p.d.t``, ``job:p.j``, and a missing
     table in SQL ``Table p.d.t was not found``; BigQuery says ``Dataset p:d``, ``Table p:d.t``,
     ``Job p:US.j``, ``Table p:d.t was not found``. Rewritten.
  6. jobs.query (``client.query_and_wait``) of a failing statement answers 200 with the error only
     in ``errors[]``: the client returns an empty result instead of raising. BigQuery answers a
     non-success status; the proxy answers the error with the status of its reason (invalidQuery
     400, notFound 404, accessDenied 403, ...).
  7. getQueryResults of a failed job answers 404 "job not found"; BigQuery answers the job's error.
     Fixed (the client itself learns failures from jobs.get).
  8. Upload (load_table_from_file) jobs ignore the caller's job id and get ``bqemu_...`` ids. The
     proxy keeps an alias table: every answer carries the caller's id, jobs.get/cancel of that id
     reach the emulator's job. (jobs.list still shows the emulator's ids.)
  9. jobs.insert of an existing job id runs the job again (200); BigQuery answers 409 duplicate
     "Already Exists: Job p:US.id", which the client turns into a jobs.get. The proxy remembers the
     job ids made through it and answers the 409: a retried MERGE is not applied twice.
 10. ``ALTER TABLE t ADD COLUMN x ...`` changes the stored table but not the metadata
     (``get_table().schema`` lacks x); ``client.update_table`` with an appended field changes the
     metadata but not the stored table (``SELECT x`` fails). After either succeeds the proxy makes
     the other side agree (tables.patch of the schema / ALTER TABLE ADD COLUMN per new field; top
     level only, not changes inside RECORDs; single statements, not inside scripts).
 11. DDL ``CREATE TABLE ... PARTITION BY ... CLUSTER BY ...`` keeps neither the partitioning
     column nor the clustering in the metadata (tables.insert with timePartitioning/clustering
     round-trips both exactly). After such a statement succeeds the proxy patches them in from its
     text: ``DATE(c)``, ``TIMESTAMP_TRUNC(c, DAY|HOUR|MONTH|YEAR)``, ``DATETIME_TRUNC``,
     ``DATE_TRUNC``, a bare column; ``require_partition_filter = TRUE``. Single statements only.
 12. Table resources echo the type names tables.insert sent (INT64, FLOAT64, BOOL, STRUCT);
     BigQuery's tables.get spells them INTEGER, FLOAT, BOOLEAN, RECORD. Rewritten (nested too).
 13. ``expirationTime`` is dropped (``get_table().expires`` is None). The proxy remembers what was
     sent and reports it; nothing ever expires (an already expired table is created and stays).
 14. A load job's ``statistics.load.outputRows`` is the table's row count after the load, not the
     rows loaded (they differ for WRITE_APPEND to a non-empty table). The proxy counts the table
     before the upload and reports the difference. ``statistics.load`` has nothing else
     (no inputFileBytes, outputBytes, badRecords).
 15. ``numRows`` in tables.get follows loads and insertAll only, not DML (0 after an INSERT). The
     proxy counts the rows on each tables.get (``numBytes`` stays the emulator's).

Not fixed: tests must not rely on these (the harness tests assert what the emulator does)
 16. Jobs run inside jobs.insert: every job is DONE in the insert answer, so a real job never
     polls, ``job.result(timeout=...)`` never expires and ``cancel_job`` answers a DONE job without
     an errorResult. Use ``proxy.stall_next`` for timeout and cancel paths.
 17. No concurrency failures: one DuckDB connection behind one write lock serialises all writes
     (concurrent clients are served correctly), so "Could not serialize access to table ... due
     to concurrent update" never happens by itself: inject it.
 18. No cost model: dry runs are accepted and answer DONE, the schema and ``totalBytesProcessed``
     0 (BigQuery estimates the bytes; a dry-run DML does not run, as in BigQuery); real jobs report
     0 bytes processed, no bytes billed, ``cacheHit`` false; ``maximumBytesBilled`` is accepted and
     ignored (BigQuery fails a query over it with bytesBilledLimitExceeded, and bills at least
     10 MiB per table). Assert the setting on the recorded request.
 19. ``require_partition_filter`` is stored (by DDL, inside timePartitioning) but not enforced: a
     query without a partition filter succeeds. Assert partition filters on recorded SQL.
 20. MERGE knows no ``INSERT ROW`` and no ``INSERT VALUES (...)`` without a column list (DuckDB
     parser errors, 400 invalidQuery). ``INSERT (cols) VALUES (...)``, ``ON FALSE``, ``WHEN NOT
     MATCHED BY SOURCE [AND ...] THEN DELETE``, ``WHEN NOT MATCHED BY TARGET [AND ...]`` and IN
     UNNEST of ARRAY<TIMESTAMP>/ARRAY<STRING> parameters work, and ``num_dml_affected_rows`` is
     deleted plus inserted rows, as in BigQuery.
 21. Scripts run in one job: ``BEGIN TRANSACTION; ...; COMMIT TRANSACTION;`` commits, and
     ``ROLLBACK TRANSACTION`` or a failing statement (``SELECT ERROR('x')``: 400 invalidQuery)
     undoes the earlier statements; but no child jobs exist (jobs.list with parentJobId is empty)
     and the script job has no per-statement statistics.
 22. Error messages of SQL failures are DuckDB's ("Query execution failed: Binder Error: ...",
     "Parser Error: ..."), reason invalidQuery as in BigQuery; match no message text beyond what
     this list names. Bad NDJSON fails the load job (DONE, errorResult reason invalid, "Error
     while reading data, error message: ..." then DuckDB's text), as in BigQuery.
 23. Every job is in location US whatever the client asked for.
 24. No BigQuery Storage API over REST, only REST reads: call ``to_dataframe``/``to_arrow`` with
     ``create_bqstorage_client=False`` should google-cloud-bigquery-storage ever be installed in the
     project venv (it is not today), or the client would dial Google.
 25. Authorization is not checked: any or no ``Authorization`` header is accepted. The proxy
     records headers, so a test can assert that one was sent.
 26. Leniencies: a NULL in a REQUIRED column is stored (DML and loads; BigQuery refuses it); an
     NDJSON field the schema lacks is ignored (BigQuery fails the load unless
     ignore_unknown_values); an unquoted integer beyond 2^53 in NDJSON loads exactly (BigQuery's
     loader reads JSON numbers as doubles, hence the quoting, which the emulator also reads
     exactly). Assert such inputs on the recorded upload (``RecordedRequest.media``).
 27. Loads with ``schema_update_options=[ALLOW_FIELD_ADDITION]`` add the field to the metadata
     only; the stored table does not get the column (its values are lost). Evolve with
     ``update_table`` (fixed, 10) before loading.
 28. Metadata it does not model (labels, partition expiration, table/column options other than
     descriptions) is at best stored as sent. Descriptions of tables and fields round-trip.
"""

from __future__ import annotations

import atexit
import ctypes
import email.parser
import email.policy
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode, urlparse

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
ENSURE_SCRIPT = REPO_ROOT / "scripts" / "ensure-bqemulator"
PROJECT = "jam-test"
LOCATION = "US"

# ----------------------------------------------------------------------------------------------
# Install and process
# ----------------------------------------------------------------------------------------------

_venv_lock = threading.Lock()
_venv_path: Path | None = None


def ensure_emulator_installed() -> Path:
    """Run scripts/ensure-bqemulator once per process; returns the emulator's venv."""
    global _venv_path
    with _venv_lock:
        if _venv_path is None:
            done = subprocess.run([str(ENSURE_SCRIPT)], capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"scripts/ensure-bqemulator failed ({done.returncode}):\n{done.stderr[-4000:]}")
            _venv_path = Path(done.stdout.strip().splitlines()[-1])
        return _venv_path


def _die_with_parent() -> None:
    """preexec_fn: the emulator gets SIGTERM if the test process dies (it runs in its own session,
    so a Ctrl-C to pytest would not reach it otherwise)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class EmulatorProcess:
    url: str  # the emulator itself, not the proxy
    port: int
    root: Path  # private temp folder: home/, data/, uploads/, emulator.log
    process: subprocess.Popen
    startup_seconds: float

    @property
    def log_path(self) -> Path:
        return self.root / "emulator.log"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after 5 s, remove the temp folder."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


def _remove_orphaned_folders() -> None:
    """Temp folders of emulators whose test process was killed (SIGKILL leaves no time to clean up;
    the emulator itself dies with its parent)."""
    for folder in Path(tempfile.gettempdir()).glob("jam-bqemu-*"):
        try:
            os.kill(int((folder / "owner.pid").read_text()), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (OSError, ValueError):
            pass  # no pid file yet (being made) or not ours to judge


_LISTEN = re.compile(r'"event":\s*"rest\.listen".*?"port":\s*(\d+)|"port":\s*(\d+).*?"event":\s*"rest\.listen"')


def start_emulator_process(
    *, persistent: bool = True, startup_timeout: float = 90.0, project: str = PROJECT
) -> EmulatorProcess:
    """Start bqemulator on a free loopback port (it binds port 0 and logs the port) with a private
    HOME, data dir and upload dir under a new temp folder; returns once /readyz answers ok."""
    venv = ensure_emulator_installed()
    _remove_orphaned_folders()
    root = Path(tempfile.mkdtemp(prefix="jam-bqemu-"))
    (root / "owner.pid").write_text(str(os.getpid()))
    home = root / "home"
    (home / ".duckdb").mkdir(parents=True)
    # The prepared extension folder, shared read-only: DuckDB only reads it for LOAD.
    (home / ".duckdb" / "extensions").symlink_to(venv / "home" / ".duckdb" / "extensions")
    (root / "uploads").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BQEMU_")}
    env.update(
        {
            "HOME": str(home),
            "BQEMU_ENABLE_FORMAT_EXTENSIONS": "false",  # would try to download DuckDB's avro extension
            "BQEMU_UPLOAD_STAGING_DIR": str(root / "uploads"),
            "BQEMU_QUERY_CACHE_TTL_SECONDS": "0",  # BigQuery never caches DML; keep SELECTs honest too
            "BQEMU_METRICS_ENABLED": "false",
            "BQEMU_TRACING_ENABLED": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    cmd = [
        str(venv / "bin" / "bqemulator"),
        "start",
        "--rest-host",
        "127.0.0.1",
        "--rest-port",
        "0",
        "--grpc-host",
        "127.0.0.1",
        "--grpc-port",
        "0",
        "--project",
        project,
        "--log-format",
        "json",
        "--log-level",
        "info",
    ]
    cmd += ["--data-dir", str(root / "data")] if persistent else ["--ephemeral"]
    started = time.monotonic()
    log = open(root / "emulator.log", "wb")
    try:
        # cwd is the temp folder: the emulator reads a .bqemu.toml from its working directory.
        process = subprocess.Popen(
            cmd,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    finally:
        log.close()
    emu = EmulatorProcess(url="", port=0, root=root, process=process, startup_seconds=0.0)
    try:
        deadline = started + startup_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"bqemulator exited with {process.returncode}:\n{emu.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"bqemulator did not start in {startup_timeout:.0f}s:\n{emu.log_tail()}")
            if not emu.port:
                m = _LISTEN.search(emu.log_tail(10**6))
                if m:
                    emu.port = int(m.group(1) or m.group(2))
                    emu.url = f"http://127.0.0.1:{emu.port}"
            if emu.port:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=5)
                    conn.request("GET", "/readyz")
                    resp = conn.getresponse()
                    ok = resp.status == 200 and json.loads(resp.read()).get("status") == "ok"
                    conn.close()
                    if ok:
                        break
                except (OSError, ValueError, http.client.HTTPException):
                    pass
            time.sleep(0.05)
        emu.startup_seconds = time.monotonic() - started
        return emu
    except BaseException:
        emu.stop()
        raise


# ----------------------------------------------------------------------------------------------
# Recording
# ----------------------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One request as the client sent it to the proxy (before any rewriting)."""

    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    status: int | None = None  # what the proxy answered
    fault: Fault | None = None  # the fault that answered it, if any

    def json(self):
        return json.loads(self.body)

    def _json_or_none(self):
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None

    @property
    def upload_type(self) -> str | None:
        return self.query.get("uploadType", [None])[0] if self.path.startswith("/upload/") else None

    def _multipart_parts(self):
        ctype = self.headers.get("content-type", "")
        if not ctype.startswith("multipart/"):
            return []
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + self.body
        )
        return list(msg.iter_parts()) if msg.is_multipart() else []

    @property
    def job_resource(self) -> dict | None:
        """The Job resource of a jobs.insert or an upload (multipart JSON part, resumable start)."""
        if self.method != "POST" or not re.search(r"/projects/[^/]+/jobs$", self.path):
            return None
        if self.upload_type == "multipart":
            parts = self._multipart_parts()
            return json.loads(parts[0].get_payload(decode=True)) if parts else None
        body = self._json_or_none()
        return body if isinstance(body, dict) else None

    @property
    def is_jobs_query(self) -> bool:
        return self.method == "POST" and bool(re.search(r"^/bigquery/v2/projects/[^/]+/queries$", self.path))

    @property
    def job_configuration(self) -> dict | None:
        """configuration of a jobs.insert/upload; for jobs.query, the request body itself."""
        if self.is_jobs_query:
            return self._json_or_none()
        resource = self.job_resource
        return resource.get("configuration") if resource else None

    @property
    def sql(self) -> str | None:
        """The SQL of a query job (jobs.insert or jobs.query), else None."""
        if self.is_jobs_query:
            return (self._json_or_none() or {}).get("query")
        cfg = self.job_configuration or {}
        return cfg.get("query", {}).get("query") if "query" in cfg else None

    @property
    def query_parameters(self) -> list[dict]:
        cfg = self.job_configuration or {}
        if self.is_jobs_query:
            return cfg.get("queryParameters", [])
        return cfg.get("query", {}).get("queryParameters", [])

    def parameter(self, name: str):
        """The value(s) of a named query parameter as sent: a list of strings for arrays."""
        for p in self.query_parameters:
            if p.get("name") == name:
                value = p.get("parameterValue", {})
                if "arrayValues" in value:
                    return [v.get("value") for v in value["arrayValues"]]
                return value.get("value")
        raise KeyError(name)

    @property
    def media(self) -> bytes | None:
        """The uploaded file bytes of a multipart upload or of a resumable chunk PUT."""
        if self.upload_type == "multipart":
            parts = self._multipart_parts()
            return parts[1].get_payload(decode=True) if len(parts) > 1 else None
        if self.method == "PUT" and self.path.startswith("/upload/"):
            return self.body
        return None


# ----------------------------------------------------------------------------------------------
# Errors and faults
# ----------------------------------------------------------------------------------------------

# BigQuery's reason -> HTTP status (https://cloud.google.com/bigquery/docs/error-messages).
REASON_STATUS = {
    "accessDenied": 403,
    "backendError": 500,
    "badRequest": 400,
    "billingNotEnabled": 403,
    "billingTierLimitExceeded": 400,
    "blocked": 403,
    "bytesBilledLimitExceeded": 400,
    "duplicate": 409,
    "internalError": 500,
    "invalid": 400,
    "invalidQuery": 400,
    "invalidUser": 400,
    "jobBackendError": 400,
    "jobInternalError": 400,
    "notFound": 404,
    "notImplemented": 501,
    "quotaExceeded": 403,
    "rateLimitExceeded": 403,
    "resourceInUse": 400,
    "resourcesExceeded": 400,
    "responseTooLarge": 403,
    "stopped": 200,
    "tableUnavailable": 400,
    "timeout": 400,
}
_STATUS_NAME = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
}


@dataclass(frozen=True)
class ScriptedError:
    status: int
    body: dict

    @property
    def error_result(self) -> dict:
        """The job-level errorResult this error becomes when injected at="result"."""
        first = (self.body.get("error", {}).get("errors") or [{}])[0]
        return {k: v for k, v in first.items() if k in ("reason", "message", "location")} or {
            "reason": "backendError",
            "message": self.body.get("error", {}).get("message", ""),
        }


def bigquery_error(status: int, reason: str, message: str, *, location: str | None = None) -> ScriptedError:
    """An error in BigQuery's JSON shape: {"error": {"code", "message", "errors": [...], "status"}}."""
    detail = {"domain": "global", "reason": reason, "message": message}
    if location:
        detail["location"] = location
        detail["locationType"] = "other"
    return ScriptedError(
        status,
        {
            "error": {
                "code": status,
                "message": message,
                "errors": [detail],
                "status": _STATUS_NAME.get(status, "UNKNOWN"),
            }
        },
    )


def concurrent_update_error(table: str = f"{PROJECT}:dataset.table") -> ScriptedError:
    """BigQuery's concurrent-DML failure (table as 'project:dataset.table')."""
    return bigquery_error(400, "invalidQuery", f"Could not serialize access to table {table} due to concurrent update")


def rate_limit_error(
    message: str = "Exceeded rate limits: too many table update operations for this table. "
    "For more information, see https://cloud.google.com/bigquery/docs/troubleshoot-quotas",
) -> ScriptedError:
    return bigquery_error(403, "rateLimitExceeded", message)


def backend_error(status: int = 500) -> ScriptedError:
    message = "Backend error. Job aborted." if status == 500 else "Service is currently unavailable."
    return bigquery_error(status, "backendError", message)


def not_found_error(message: str) -> ScriptedError:
    return bigquery_error(404, "notFound", message)


STOPPED = bigquery_error(400, "stopped", "Job execution was cancelled: User requested cancellation")


@dataclass
class _SyntheticJob:
    project: str
    job_id: str
    job: dict  # the RUNNING resource
    error: ScriptedError | None  # what it failed with; None while a stalled job is still "running"
    polls_left: int | None = None
    original: tuple | None = None  # (request, host, raw query) that created it, run when a stall ends


Matcher = Callable[[RecordedRequest], bool]


def query_job(prefix: str | None = None, *, contains: str | None = None) -> Matcher:
    """Matches a query job's creation (jobs.insert or jobs.query) whose SQL starts with prefix
    (case-insensitive, leading whitespace ignored) and contains `contains`."""

    def match(req: RecordedRequest) -> bool:
        sql = req.sql
        if sql is None or (req.job_configuration or {}).get("dryRun"):
            return False
        if prefix is not None and not sql.lstrip().upper().startswith(prefix.upper()):
            return False
        return contains is None or contains in sql

    return match


def load_job() -> Matcher:
    """Matches a load job's creation: a multipart upload, a resumable upload's start, or a
    jobs.insert with configuration.load."""

    def match(req: RecordedRequest) -> bool:
        if req.upload_type in ("multipart", "resumable") and req.method == "POST":
            return True
        return "load" in (req.job_configuration or {}) and not req.is_jobs_query

    return match


def request_to(method: str, path_regex: str) -> Matcher:
    return lambda req: req.method == method and re.search(path_regex, req.path) is not None


@dataclass
class Fault:
    matcher: Matcher
    error: ScriptedError
    at: str  # "request" | "result"
    times: int
    forward: bool
    polls: int | None = None  # stall_next: jobs.get polls answered RUNNING before the job runs
    hang_seconds: float = 0.0  # hang_next: how long the request waits before it is forwarded
    hits: list[RecordedRequest] = field(default_factory=list)

    @property
    def exhausted(self) -> bool:
        return len(self.hits) >= self.times


# ----------------------------------------------------------------------------------------------
# The proxy
# ----------------------------------------------------------------------------------------------

_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "accept-encoding",
    "proxy-connection",
    "te",
    "upgrade",
}
_DATASET_PATH = re.compile(r"^/bigquery/v2/projects/([^/]+)/datasets/([^/]+)(/.*)?$")
_TABLES_LIST = re.compile(r"^/bigquery/v2/projects/([^/]+)/datasets/([^/]+)/tables$")
_TABLE_PATH = re.compile(r"^/bigquery/v2/projects/([^/]+)/datasets/([^/]+)/tables/([^/]+)$")
_JOB_PATH = re.compile(r"^/bigquery/v2/projects/([^/]+)/(jobs|queries)/([^/]+)(/cancel|/delete)?$")
_JOBS_INSERT = re.compile(r"^/bigquery/v2/projects/([^/]+)/jobs$")
_UPLOAD = re.compile(r"^/upload/bigquery/v2/projects/([^/]+)/jobs$")
_ACCESS_DENIED_TABLE = re.compile(r"Table ([^:\s]+):([^.\s]+)\.")
_TABLE_REF = r"`?([A-Za-z0-9_.\-]+)`?(?:\.`?([A-Za-z0-9_\-]+)`?)?(?:\.`?([A-Za-z0-9_\-]+)`?)?"
_ALTER_ADD = re.compile(r"^\s*ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?" + _TABLE_REF + r"\s+ADD\s+COLUMN\b", re.I | re.S)
_CREATE_TABLE = re.compile(
    r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?" + _TABLE_REF, re.I | re.S
)
_PARTITION_BY = re.compile(
    r"\bPARTITION\s+BY\s+(?:(?:DATE|DATETIME_TRUNC|TIMESTAMP_TRUNC|DATE_TRUNC)\s*\(\s*`?(\w+)`?\s*(?:,\s*(\w+)\s*)?\)"
    r"|`?(\w+)\b`?(?!\s*\())",
    re.I,
)
_CLUSTER_BY = re.compile(r"\bCLUSTER\s+BY\s+((?:`?\w+`?\s*,\s*)*`?\w+`?)", re.I)


def _split_ref(groups: tuple, project: str) -> tuple[str, str, str] | None:
    parts = [p for p in groups if p]
    if len(parts) == 1:  # `p.d.t` in one pair of backticks
        parts = parts[0].split(".")
    if len(parts) == 2:
        parts = [project, *parts]
    return tuple(parts) if len(parts) == 3 else None  # type: ignore[return-value]


def _path_project(path: str) -> str:
    return path.split("/projects/")[1].split("/")[0]


def _error_response(err: ScriptedError) -> tuple[int, dict, bytes]:
    return err.status, {"Content-Type": "application/json; charset=UTF-8"}, json.dumps(err.body).encode()


def _json_response(status: int, obj) -> tuple[int, dict, bytes]:
    return status, {"Content-Type": "application/json; charset=UTF-8"}, json.dumps(obj).encode()


def _normalize_message(message: str) -> str:
    message = re.sub(r"^Not found: dataset:([^.\s]+)\.(\S+)$", r"Not found: Dataset \1:\2", message)
    message = re.sub(r"^Not found: table:([^.\s]+)\.([^.\s]+)\.(\S+)$", r"Not found: Table \1:\2.\3", message)
    message = re.sub(r"^Not found: job:([^.\s]+)\.(\S+)$", rf"Not found: Job \1:{LOCATION}.\2", message)
    message = re.sub(
        r"Not found: Table ([A-Za-z0-9_\-]+)\.([A-Za-z0-9_]+)\.([A-Za-z0-9_]+) was not found",
        r"Not found: Table \1:\2.\3 was not found",
        message,
    )
    return message


class BigQueryProxy:
    """Recording, fault-injecting, deviation-fixing HTTP proxy in front of the emulator."""

    def __init__(self, upstream_url: str, project: str = PROJECT):
        up = urlparse(upstream_url)
        self.upstream_host, self.upstream_port = up.hostname, up.port
        self.project = project
        self.requests: list[RecordedRequest] = []
        self.errors: list[str] = []  # tracebacks of proxy bugs (answered 502)
        self._faults: list[Fault] = []
        self._lock = threading.RLock()
        self._alias: dict[str, str] = {}  # caller's job id -> emulator's job id (uploads)
        self._uploads: dict[
            str, tuple[str | None, dict]
        ] = {}  # resumable upload_id -> (caller's job id, configuration)
        self._known_jobs: set[tuple[str, str]] = set()
        self._reverse_alias: dict[str, str] = {}  # emulator's job id -> caller's
        self._synthetic: dict[tuple[str, str], _SyntheticJob] = {}
        self._synthetic_uploads: dict[str, tuple[str, str, dict, ScriptedError]] = {}
        self._expiration: dict[tuple[str, str, str], str] = {}  # table -> expirationTime as sent
        self._rows_before: dict[str | None, int] = {}  # load job id (the emulator's) -> destination rows before it
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle --

    def start(self) -> BigQueryProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes

            def _do(self):
                proxy._handle(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _do

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="bq-proxy", daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> BigQueryProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- test API --

    def fail_next(
        self,
        matcher: Matcher,
        status: int | ScriptedError,
        body: dict | None = None,
        *,
        at: str = "request",
        times: int = 1,
        forward: bool = False,
    ) -> Fault:
        """Answer the next `times` requests matching `matcher` with a scripted error.

        status/body: a ScriptedError (concurrent_update_error(), rate_limit_error(), backend_error())
        or an HTTP status and a JSON body in BigQuery's error shape. at="request": the request itself
        is answered with the error (forward=True: it still reaches the emulator, only the answer is
        replaced). at="result": only for job creation; the job is accepted as RUNNING without being
        run and is then reported DONE with the error as status.errorResult.
        """
        if at not in ("request", "result"):
            raise ValueError("at must be 'request' or 'result'")
        if at == "result" and forward:
            raise ValueError("at='result' never runs the job; forward applies to at='request'")
        error = (
            status
            if isinstance(status, ScriptedError)
            else ScriptedError(
                status,
                body
                or {
                    "error": {
                        "code": status,
                        "message": "scripted error",
                        "errors": [{"domain": "global", "reason": "backendError", "message": "scripted error"}],
                    }
                },
            )
        )
        fault = Fault(matcher, error, at, times, forward)
        with self._lock:
            self._faults.append(fault)
        return fault

    def stall_next(self, matcher: Matcher, *, polls: int | None = None, times: int = 1) -> Fault:
        """Accept the next `times` job creations matching `matcher` as RUNNING without running them:
        jobs.get answers RUNNING and getQueryResults jobComplete=false (after up to 0.2 s), so
        ``job.result(timeout=...)`` expires and ``job.done()`` stays False. ``client.cancel_job``
        stops it (DONE, errorResult reason "stopped"; it never ran). polls=N: after N jobs.get
        polls the job runs for real and the Nth poll answers its outcome. Not for resumable
        uploads."""
        fault = Fault(matcher, STOPPED, "stall", times, False, polls)
        with self._lock:
            self._faults.append(fault)
        return fault

    def hang_next(self, matcher: Matcher, seconds: float, *, times: int = 1) -> Fault:
        """Hold the next `times` requests matching `matcher` for `seconds`, then forward them and answer
        as usual (a stalled connection: the client may have given up and sent the request again)."""
        fault = Fault(matcher, STOPPED, "hang", times, True, hang_seconds=seconds)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Forget recorded requests and pending faults (the fixture does this per test)."""
        with self._lock:
            self.requests.clear()
            self._faults.clear()
            self.errors.clear()

    def queries(self) -> list[RecordedRequest]:
        """Recorded query-job creations (jobs.insert with a query, jobs.query), in order."""
        return [r for r in list(self.requests) if r.sql is not None]

    # -- upstream --

    def _upstream(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=600)
        try:
            hdrs = dict(headers or {})
            if body is not None and not any(k.lower() == "content-type" for k in hdrs):
                hdrs["Content-Type"] = "application/json"
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k: v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def _upstream_json(self, method: str, path: str, obj=None):
        status, _, data = self._upstream(method, path, None if obj is None else json.dumps(obj).encode())
        try:
            return status, json.loads(data) if data else None
        except ValueError:
            return status, None

    def _dataset_exists(self, project: str, dataset: str) -> bool:
        status, _ = self._upstream_json("GET", f"/bigquery/v2/projects/{project}/datasets/{dataset}")
        return status == 200

    def _run_sql(self, project: str, sql: str) -> dict | None:
        status, body = self._upstream_json(
            "POST", f"/bigquery/v2/projects/{project}/queries", {"query": sql, "useLegacySql": False}
        )
        if status != 200 or not body or body.get("errors"):
            self.errors.append(f"sync SQL failed: {sql}: {body}")
            return None
        return body

    def _storage_fields(self, project: str, dataset: str, table: str) -> list[dict] | None:
        body = self._run_sql(project, f"SELECT * FROM `{project}.{dataset}.{table}` LIMIT 0")
        return None if body is None else body.get("schema", {}).get("fields", [])

    # -- request handling --

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urlparse(h.path)
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(h.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(h.rfile.read(size))
                h.rfile.readline()
            body = b"".join(chunks)
        else:
            length = int(h.headers.get("Content-Length") or 0)
            body = h.rfile.read(length) if length else b""
        req = RecordedRequest(
            h.command,
            url.path,
            parse_qs(url.query, keep_blank_values=True),
            {k.lower(): v for k, v in h.headers.items()},
            body,
        )
        with self._lock:
            self.requests.append(req)
        try:
            status, headers, payload = self._answer(req, h.headers.get("Host", ""), url.query)
        except Exception:  # a proxy bug: say so loudly, and make it visible to the test
            import traceback

            self.errors.append(traceback.format_exc())
            status, headers, payload = _error_response(bigquery_error(502, "backendError", "bigquery proxy failed"))
        req.status = status
        h.send_response(status)
        for k, v in headers.items():
            if k.lower() not in _HOP and k.lower() not in ("date", "server"):
                h.send_header(k, v)
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(payload)

    def _take_fault(self, req: RecordedRequest) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.exhausted:
                    continue
                if fault.at in ("result", "stall") and not self._is_job_creation(req):
                    continue
                if fault.matcher(req):
                    fault.hits.append(req)
                    req.fault = fault
                    return fault
        return None

    @staticmethod
    def _is_job_creation(req: RecordedRequest) -> bool:
        if req.method != "POST":
            return False
        if req.is_jobs_query:
            return True
        if req.upload_type in ("multipart", "resumable"):
            return True
        return bool(_JOBS_INSERT.match(req.path))

    def _answer(self, req: RecordedRequest, host: str, raw_query: str) -> tuple[int, dict, bytes]:
        fault = self._take_fault(req)
        if fault is not None and fault.at == "hang":
            time.sleep(fault.hang_seconds)
            fault = None
        if fault is not None and fault.at in ("result", "stall"):
            return self._accept_synthetic_job(req, fault, host, raw_query)
        if fault is not None and not fault.forward:
            return _error_response(fault.error)

        # Requests for a job the proxy made up (at="result", stall_next) never reach the emulator.
        m = _JOB_PATH.match(req.path)
        if m:
            project, kind, job_id, suffix = m.groups()
            with self._lock:
                synthetic = self._synthetic.get((project, job_id))
            if synthetic is not None:
                return self._answer_synthetic(req, synthetic, kind, suffix)
        if req.method == "PUT" and req.path.startswith("/upload/"):
            upload_id = req.query.get("upload_id", [""])[0]
            if upload_id in self._synthetic_uploads:
                return self._answer_synthetic_upload(req, upload_id)

        # Job ids: BigQuery refuses a second job with the same id.
        client_job_id = self._client_job_id(req)
        if client_job_id:
            project = (req.job_resource.get("jobReference") or {}).get("projectId") or _path_project(req.path)
            if (project, client_job_id) in self._known_jobs:
                return _error_response(
                    bigquery_error(409, "duplicate", f"Already Exists: Job {project}:{LOCATION}.{client_job_id}")
                )

        status, resp_headers, payload = self._forward(req, host, raw_query)
        if fault is not None:  # forward=True: the work was done, the answer is lost
            return _error_response(fault.error)
        return status, resp_headers, payload

    @staticmethod
    def _client_job_id(req: RecordedRequest) -> str | None:
        resource = req.job_resource
        if not resource or (resource.get("configuration") or {}).get("dryRun"):
            return None
        return (resource.get("jobReference") or {}).get("jobId")

    def _forward(self, req: RecordedRequest, host: str, raw_query: str) -> tuple[int, dict, bytes]:
        """Send the request to the emulator (job ids mapped, media type fixed), fix the answer."""
        path, body, headers = req.path, req.body, {k: v for k, v in req.headers.items() if k not in _HOP}
        headers["host"] = host  # so the emulator's resumable Location points back at the proxy
        m = _JOB_PATH.match(req.path)
        if m:
            project, kind, job_id, suffix = m.groups()
            if job_id in self._alias:
                path = f"/bigquery/v2/projects/{project}/{kind}/{quote(self._alias[job_id])}{suffix or ''}"
        if req.upload_type == "multipart":
            body = self._fix_multipart_media_type(req)
        rows_before = self._rows_before_append(req)
        target = path + (f"?{raw_query}" if raw_query else "")
        status, resp_headers, payload = self._upstream(req.method, target, body, headers)
        return self._fix_response(req, status, resp_headers, payload, self._client_job_id(req), rows_before)

    def _rows_before_append(self, req: RecordedRequest) -> int | None:
        """numRows of a WRITE_APPEND load's destination before the upload that runs the load (the
        emulator reports the table's row count after the load as the job's outputRows)."""
        if req.upload_type == "multipart" and req.method == "POST":
            configuration = (req.job_resource or {}).get("configuration") or {}
        elif req.method == "PUT" and req.path.startswith("/upload/"):
            with self._lock:
                configuration = self._uploads.get(req.query.get("upload_id", [""])[0], (None, {}))[1]
        else:
            return None
        load = configuration.get("load") or {}
        dest = load.get("destinationTable") or {}
        if (load.get("writeDisposition") or "WRITE_APPEND") != "WRITE_APPEND" or not dest.get("tableId"):
            return None
        project = dest.get("projectId") or self.project
        if not self._dataset_exists(project, dest.get("datasetId", "")):
            return None
        status, table = self._upstream_json(
            "GET", f"/bigquery/v2/projects/{project}/datasets/{dest.get('datasetId')}/tables/{dest['tableId']}"
        )
        if status != 200:
            return None
        # numRows follows loads only, not DML: count.
        body = self._run_sql(project, f"SELECT COUNT(*) AS n FROM `{project}.{dest['datasetId']}.{dest['tableId']}`")
        return int(body["rows"][0]["f"][0]["v"]) if body and body.get("rows") else None

    # -- jobs the proxy makes up: at="result" faults and stalled jobs --

    def _accept_synthetic_job(
        self, req: RecordedRequest, fault: Fault, host: str, raw_query: str
    ) -> tuple[int, dict, bytes]:
        project = _path_project(req.path)
        stall = fault.at == "stall"
        if req.upload_type == "resumable":
            if stall:
                raise ValueError("stall_next does not stall resumable uploads; use a multipart upload (size=...)")
            upload_id = f"fault_{uuid.uuid4().hex[:12]}"
            resource = dict(req.job_resource or {})
            job_id = (resource.get("jobReference") or {}).get("jobId") or f"bqemu_fault_{uuid.uuid4().hex[:12]}"
            self._synthetic_uploads[upload_id] = (project, job_id, resource, fault.error)
            location = (
                f"http://{host}/upload/bigquery/v2/projects/{project}/jobs"
                f"?{urlencode({'uploadType': 'resumable', 'upload_id': upload_id})}"
            )
            return 200, {"Location": location, "X-GUploader-UploadID": upload_id, "Content-Type": "text/plain"}, b""
        if req.is_jobs_query:
            cfg = req.json()
            job_id = f"bqemu_fault_{uuid.uuid4().hex[:12]}"
            configuration = {
                "query": {k: v for k, v in cfg.items() if k not in ("requestId", "maxResults", "timeoutMs")}
            }
            if "dryRun" in cfg:
                configuration["dryRun"] = cfg["dryRun"]
        else:
            resource = req.job_resource or {}
            job_id = (resource.get("jobReference") or {}).get("jobId") or f"bqemu_fault_{uuid.uuid4().hex[:12]}"
            configuration = resource.get("configuration", {})
        entry = self._make_synthetic_job(
            project, job_id, configuration, None if stall else fault.error, str(int(time.time() * 1000))
        )
        if stall:
            entry.polls_left = fault.polls
            entry.original = (req, host, raw_query)
        if req.is_jobs_query:
            return _json_response(
                200, {"kind": "bigquery#queryResponse", "jobReference": entry.job["jobReference"], "jobComplete": False}
            )
        return _json_response(200, entry.job)

    def _make_synthetic_job(
        self, project: str, job_id: str, configuration: dict, error: ScriptedError | None, now: str
    ) -> _SyntheticJob:
        job = {
            "kind": "bigquery#job",
            "id": f"{project}:{LOCATION}.{job_id}",
            "jobReference": {"projectId": project, "jobId": job_id, "location": LOCATION},
            "configuration": configuration,
            "status": {"state": "RUNNING"},
            "statistics": {"creationTime": now, "startTime": now},
        }
        entry = _SyntheticJob(project, job_id, job, error)
        with self._lock:
            self._synthetic[(project, job_id)] = entry
            self._known_jobs.add((project, job_id))
        return entry

    @staticmethod
    def _done_synthetic(entry: _SyntheticJob) -> dict:
        done = json.loads(json.dumps(entry.job))
        result = entry.error.error_result
        done["status"] = {"state": "DONE", "errorResult": result, "errors": [result]}
        done["statistics"]["endTime"] = str(int(time.time() * 1000))
        return done

    def _answer_synthetic(self, req: RecordedRequest, entry: _SyntheticJob, kind: str, suffix: str | None):
        with self._lock:
            if suffix == "/cancel" and entry.error is None:  # a stalled job stops, never having run
                entry.error = STOPPED
            stalled = entry.error is None
            release = False
            if stalled and kind == "jobs" and entry.polls_left is not None:
                entry.polls_left -= 1
                release = entry.polls_left <= 0
                if release:
                    del self._synthetic[(entry.project, entry.job_id)]
        if release:
            return self._release(entry)
        if stalled and kind == "queries":  # getQueryResults waits for the job; answers not done yet
            wait_ms = int((req.query.get("timeoutMs") or ["200"])[0])
            time.sleep(min(wait_ms, 200) / 1000)
            return _json_response(
                200,
                {
                    "kind": "bigquery#getQueryResultsResponse",
                    "jobReference": entry.job["jobReference"],
                    "jobComplete": False,
                },
            )
        if stalled:
            return _json_response(200, entry.job)
        if kind == "queries":  # getQueryResults of a failed job: BigQuery answers the job's error
            return _error_response(entry.error)
        done = self._done_synthetic(entry)
        if suffix == "/cancel":
            return _json_response(200, {"kind": "bigquery#jobCancelResponse", "job": done})
        return _json_response(200, done)

    def _release(self, entry: _SyntheticJob) -> tuple[int, dict, bytes]:
        """A stalled job's polls are over: run its creation request for real; answer jobs.get."""
        req, host, raw_query = entry.original
        status, headers, payload = self._forward(req, host, raw_query)
        try:
            body = json.loads(payload)
        except ValueError:
            body = None
        if status != 200 or not isinstance(body, dict):
            return status, headers, payload
        real_id = (body.get("jobReference") or {}).get("jobId")
        if body.get("kind") == "bigquery#job" and real_id == entry.job_id:
            return status, headers, payload
        real_id = self._alias.get(real_id, real_id)
        with self._lock:
            self._alias[entry.job_id] = real_id
            self._reverse_alias[real_id] = entry.job_id
        jstatus, jheaders, jpayload = self._upstream(
            "GET", f"/bigquery/v2/projects/{entry.project}/jobs/{quote(real_id)}"
        )
        return self._fix_response(
            RecordedRequest("GET", f"/bigquery/v2/projects/{entry.project}/jobs/{real_id}", {}, {}, b""),
            jstatus,
            jheaders,
            jpayload,
            None,
        )

    def _answer_synthetic_upload(self, req: RecordedRequest, upload_id: str):
        project, job_id, resource, error = self._synthetic_uploads[upload_id]
        crange = req.headers.get("content-range", "")
        m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", crange)
        final = m is not None and m.group(3) != "*" and int(m.group(2)) + 1 == int(m.group(3))
        if crange.startswith("bytes */"):
            final = True
        if not final:
            return 308, {"Range": f"bytes=0-{m.group(2)}"} if m else {}, b""
        del self._synthetic_uploads[upload_id]
        entry = self._make_synthetic_job(
            project, job_id, resource.get("configuration", {}), error, str(int(time.time() * 1000))
        )
        return _json_response(200, entry.job)

    # -- request rewriting --

    @staticmethod
    def _fix_multipart_media_type(req: RecordedRequest) -> bytes:
        m = re.search(r'boundary="?([^";]+)"?', req.headers.get("content-type", ""))
        if not m:
            return req.body
        sep = b"--" + m.group(1).encode()
        first = req.body.find(sep)
        second = req.body.find(sep, first + len(sep))
        if second < 0:
            return req.body
        head_end = req.body.find(b"\r\n\r\n", second)
        if head_end < 0:
            return req.body
        head = req.body[second:head_end]
        fixed = re.sub(rb"(?im)^(content-type:\s*)\*/\*\s*$", rb"\1application/octet-stream", head)
        return req.body[:second] + fixed + req.body[head_end:]

    # -- response rewriting --

    def _fix_response(
        self,
        req: RecordedRequest,
        status: int,
        headers: dict,
        payload: bytes,
        client_job_id: str | None,
        rows_before: int | None = None,
    ) -> tuple[int, dict, bytes]:
        is_json = "json" in headers.get("content-type", headers.get("Content-Type", "")).lower()
        body = None
        if is_json and payload:
            try:
                body = json.loads(payload)
            except ValueError:
                body = None
        changed = False

        # 500 for a missing dataset -> BigQuery's 404.
        dm = _DATASET_PATH.match(req.path)
        if status == 500 and dm and not self._dataset_exists(dm.group(1), dm.group(2)):
            return _error_response(not_found_error(f"Not found: Dataset {dm.group(1)}:{dm.group(2)}"))
        lm = _TABLES_LIST.match(req.path)
        if req.method == "GET" and status == 200 and lm and not self._dataset_exists(lm.group(1), lm.group(2)):
            return _error_response(not_found_error(f"Not found: Dataset {lm.group(1)}:{lm.group(2)}"))

        if isinstance(body, dict):
            # Error message spelling.
            err = body.get("error")
            if isinstance(err, dict):
                if isinstance(err.get("message"), str):
                    new = _normalize_message(err["message"])
                    changed |= new != err["message"]
                    err["message"] = new
                for e in err.get("errors") or []:
                    if isinstance(e.get("message"), str):
                        new = _normalize_message(e["message"])
                        changed |= new != e["message"]
                        e["message"] = new
            # Job resources: missing-dataset reason and message spelling.
            job = body.get("job") if body.get("kind") == "bigquery#jobCancelResponse" else body
            if isinstance(job, dict) and isinstance(job.get("status"), dict):
                changed |= self._fix_job_errors(job["status"])
            if body.get("kind") == "bigquery#queryResponse" and body.get("errors"):
                changed |= self._fix_error_list(body["errors"])

        # Upload jobs keep the caller's job id.
        if _UPLOAD.match(req.path) and status == 200:
            if req.method == "POST" and req.upload_type == "resumable":
                location = headers.get("Location") or headers.get("location") or ""
                upload_id = parse_qs(urlparse(location).query).get("upload_id", [""])[0]
                if upload_id:
                    with self._lock:
                        self._uploads[upload_id] = (client_job_id, (req.job_resource or {}).get("configuration") or {})
            elif isinstance(body, dict) and body.get("kind") == "bigquery#job":
                if req.method == "POST":
                    wanted = client_job_id
                else:
                    with self._lock:
                        wanted = self._uploads.pop(req.query.get("upload_id", [""])[0], (None, {}))[0]
                if rows_before:
                    with self._lock:
                        self._rows_before[(body.get("jobReference") or {}).get("jobId")] = rows_before
                emu_ref = body.get("jobReference") or {}
                if wanted and emu_ref.get("jobId") and emu_ref["jobId"] != wanted:
                    with self._lock:
                        self._alias[wanted] = emu_ref["jobId"]
                        self._reverse_alias[emu_ref["jobId"]] = wanted
                    emu_ref["jobId"] = wanted
                    body["id"] = f"{emu_ref.get('projectId', self.project)}:{wanted}"
                    changed = True

        # Load jobs report the rows they loaded, not the table's rows after the load.
        if isinstance(body, dict) and body.get("kind") == "bigquery#job":
            job_id = (body.get("jobReference") or {}).get("jobId")
            with self._lock:
                before = self._rows_before.get(job_id) or self._rows_before.get(self._alias.get(job_id))
            load_stats = (body.get("statistics") or {}).get("load") or {}
            if before and "outputRows" in load_stats and not (body.get("status") or {}).get("errorResult"):
                load_stats["outputRows"] = str(int(load_stats["outputRows"]) - before)
                changed = True

        # Jobs the caller knows under another id (uploads, released stalls) keep that id.
        if isinstance(body, dict):
            for holder in (body, body.get("job")):
                ref = holder.get("jobReference") if isinstance(holder, dict) else None
                if isinstance(ref, dict) and ref.get("jobId") in self._reverse_alias:
                    ref["jobId"] = self._reverse_alias[ref["jobId"]]
                    if "id" in holder:
                        holder["id"] = f"{ref.get('projectId', self.project)}:{ref['jobId']}"
                    changed = True

        # Remember created jobs (for the 409 on a second insert with the same id).
        if status == 200 and isinstance(body, dict) and body.get("kind") == "bigquery#job":
            ref = body.get("jobReference") or {}
            dry = (body.get("configuration") or {}).get("dryRun")
            if ref.get("jobId") and not dry:
                with self._lock:
                    self._known_jobs.add((ref.get("projectId", self.project), ref["jobId"]))

        # jobs.query of a failed statement: BigQuery answers an error status.
        if (
            req.is_jobs_query
            and status == 200
            and isinstance(body, dict)
            and body.get("errors")
            and body.get("jobComplete")
            and not body.get("rows")
        ):
            first = body["errors"][0]
            return self._error_from_result(first)

        # getQueryResults of a failed job: the job's error.
        jm = _JOB_PATH.match(req.path)
        if jm and jm.group(2) == "queries" and req.method == "GET" and status == 404:
            project, _, job_id, _ = jm.groups()
            emu_id = self._alias.get(job_id, job_id)
            jstatus, job = self._upstream_json("GET", f"/bigquery/v2/projects/{project}/jobs/{quote(emu_id)}")
            if jstatus == 200 and job and (job.get("status") or {}).get("errorResult"):
                self._fix_job_errors(job["status"])
                return self._error_from_result(job["status"]["errorResult"])

        # Keep table metadata and stored table in step (schema, DDL partitioning/clustering).
        if status == 200:
            self._sync_after(req, body)

        # Table resources: legacy type names, and the expirationTime the emulator drops.
        if status in (200, 204):
            changed |= self._fix_table_resource(req, body)

        if changed:
            payload = json.dumps(body).encode()
        return status, headers, payload

    def _fix_table_resource(self, req: RecordedRequest, body) -> bool:
        tm = _TABLE_PATH.match(req.path)
        dm = _DATASET_PATH.match(req.path)
        with self._lock:
            if req.method == "DELETE" and tm:
                self._expiration.pop(tm.groups(), None)
            elif req.method == "DELETE" and dm and not dm.group(3):
                for key in [k for k in self._expiration if k[:2] == dm.groups()[:2]]:
                    del self._expiration[key]
        if not isinstance(body, dict) or body.get("kind") != "bigquery#table":
            return False
        ref = body.get("tableReference") or {}
        key = (ref.get("projectId"), ref.get("datasetId"), ref.get("tableId"))
        changed = _legacy_type_names((body.get("schema") or {}).get("fields") or [])
        if req.method in ("POST", "PATCH", "PUT"):
            try:
                sent = json.loads(req.body) if req.body else {}
            except ValueError:
                sent = {}
            if "expirationTime" in sent:
                with self._lock:
                    if sent["expirationTime"] is None:
                        self._expiration.pop(key, None)
                    else:
                        self._expiration[key] = str(sent["expirationTime"])
        if req.method == "GET" and body.get("type", "TABLE") == "TABLE" and all(key):
            # numRows follows loads and streaming inserts only, not DML: count the rows.
            counted = self._run_sql(key[0], f"SELECT COUNT(*) AS n FROM `{key[0]}.{key[1]}.{key[2]}`")
            if counted and counted.get("rows"):
                n = str(counted["rows"][0]["f"][0]["v"])
                if body.get("numRows") != n:
                    body["numRows"] = n
                    changed = True
        with self._lock:
            expiration = self._expiration.get(key)
        if expiration is not None and body.get("expirationTime") != expiration:
            body["expirationTime"] = expiration
            changed = True
        return changed

    @staticmethod
    def _error_from_result(error_result: dict) -> tuple[int, dict, bytes]:
        reason = error_result.get("reason", "invalidQuery")
        status = REASON_STATUS.get(reason, 400)
        if status == 200:
            status = 400
        return _error_response(
            bigquery_error(status, reason, error_result.get("message", ""), location=error_result.get("location"))
        )

    def _fix_job_errors(self, job_status: dict) -> bool:
        changed = False
        if isinstance(job_status.get("errorResult"), dict):
            changed |= self._fix_error_list([job_status["errorResult"]])
        if isinstance(job_status.get("errors"), list):
            changed |= self._fix_error_list(job_status["errors"])
        return changed

    def _fix_error_list(self, errors: list) -> bool:
        changed = False
        for e in errors:
            if not isinstance(e, dict) or not isinstance(e.get("message"), str):
                continue
            if e.get("reason") == "accessDenied":
                m = _ACCESS_DENIED_TABLE.search(e["message"])
                if m and not self._dataset_exists(m.group(1), m.group(2)):
                    e["reason"] = "notFound"
                    e["message"] = f"Not found: Dataset {m.group(1)}:{m.group(2)} was not found in location {LOCATION}"
                    changed = True
                    continue
            new = _normalize_message(e["message"])
            if new != e["message"]:
                e["message"] = new
                changed = True
        return changed

    def _sync_after(self, req: RecordedRequest, body) -> None:
        # A successful single DDL statement (jobs.insert or jobs.query).
        sql = req.sql
        if sql is not None and isinstance(body, dict) and not (req.job_configuration or {}).get("dryRun"):
            done_ok = (body.get("kind") == "bigquery#queryResponse" and not body.get("errors")) or (
                (body.get("status") or {}).get("state") == "DONE" and not (body.get("status") or {}).get("errorResult")
            )
            if done_ok and ";" not in sql.strip().rstrip(";"):
                project = req.path.split("/projects/")[1].split("/")[0]
                self._sync_ddl(project, sql)
        # tables.patch / tables.update with new top-level fields: add them to the stored table.
        tm = _TABLE_PATH.match(req.path)
        if tm and req.method in ("PATCH", "PUT"):
            try:
                sent = json.loads(req.body)
            except ValueError:
                return
            fields = (sent.get("schema") or {}).get("fields")
            if fields:
                self._add_stored_columns(*tm.groups(), fields)

    def _sync_ddl(self, project: str, sql: str) -> None:
        m = _ALTER_ADD.match(sql)
        if m:
            ref = _split_ref(m.groups(), project)
            if ref:
                self._add_metadata_columns(*ref)
            return
        m = _CREATE_TABLE.match(sql)
        if not m or re.search(r"\b(CLONE|COPY|LIKE|SNAPSHOT)\b", sql[: m.end() + 20], re.I):
            return
        ref = _split_ref(m.groups(), project)
        if not ref:
            return
        patch: dict = {}
        # PARTITION BY / CLUSTER BY sit after the column list (and before AS SELECT / OPTIONS).
        tail = sql[m.end() :]
        depth, cut = 0, 0
        for i, ch in enumerate(tail):  # skip the parenthesised column list
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth == 0:
                    cut = i + 1
                    break
            elif depth == 0 and not ch.isspace():
                break
        tail = tail[cut:]
        tail = re.split(r"\bAS\s*\(?\s*(?:SELECT|WITH)\b", tail, maxsplit=1, flags=re.I)[0]
        pm = _PARTITION_BY.search(tail)
        if pm:
            column, unit, bare = pm.group(1), pm.group(2), pm.group(3)
            if column:
                patch["timePartitioning"] = {"type": (unit or "DAY").upper(), "field": column}
            elif bare and bare.upper() != "_PARTITIONDATE":
                patch["timePartitioning"] = {"type": "DAY", "field": bare}
            else:
                patch["timePartitioning"] = {"type": "DAY"}
            if re.search(r"require_partition_filter\s*=\s*true", tail, re.I):
                patch["requirePartitionFilter"] = True
        cm = _CLUSTER_BY.search(tail)
        if cm:
            patch["clustering"] = {"fields": [c.strip().strip("`") for c in cm.group(1).split(",")]}
        if patch:
            p, d, t = ref
            status, body = self._upstream_json("PATCH", f"/bigquery/v2/projects/{p}/datasets/{d}/tables/{t}", patch)
            if status != 200:
                self.errors.append(f"DDL partition/cluster sync of {ref} failed: {status} {body}")

    def _add_metadata_columns(self, project: str, dataset: str, table: str) -> None:
        """After ALTER TABLE ADD COLUMN: append the stored table's new columns to its metadata."""
        status, meta = self._upstream_json("GET", f"/bigquery/v2/projects/{project}/datasets/{dataset}/tables/{table}")
        stored = self._storage_fields(project, dataset, table)
        if status != 200 or not meta or stored is None:
            return
        fields = list((meta.get("schema") or {}).get("fields", []))
        names = {f["name"].lower() for f in fields}
        added = [f for f in stored if f["name"].lower() not in names]
        if not added:
            return
        for f in added:
            f.setdefault("mode", "NULLABLE")
        status, body = self._upstream_json(
            "PATCH",
            f"/bigquery/v2/projects/{project}/datasets/{dataset}/tables/{table}",
            {"schema": {"fields": fields + added}},
        )
        if status != 200:
            self.errors.append(f"ALTER TABLE metadata sync of {project}.{dataset}.{table} failed: {status} {body}")

    def _add_stored_columns(self, project: str, dataset: str, table: str, fields: list[dict]) -> None:
        """After a tables.patch/update: ALTER TABLE ADD COLUMN for fields the stored table lacks."""
        stored = self._storage_fields(project, dataset, table)
        if stored is None:
            return
        names = {f["name"].lower() for f in stored}
        for f in fields:
            if f["name"].lower() in names:
                continue
            self._run_sql(project, f"ALTER TABLE `{project}.{dataset}.{table}` ADD COLUMN `{f['name']}` {_sql_type(f)}")


_LEGACY_TYPES = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN", "STRUCT": "RECORD"}


def _legacy_type_names(fields: list[dict]) -> bool:
    """BigQuery's tables.get spells types the legacy way (INTEGER, FLOAT, BOOLEAN, RECORD) however
    the table was made; the emulator echoes what tables.insert sent."""
    changed = False
    for f in fields:
        kind = str(f.get("type", "")).upper()
        if kind in _LEGACY_TYPES:
            f["type"] = _LEGACY_TYPES[kind]
            changed = True
        if f.get("fields"):
            changed |= _legacy_type_names(f["fields"])
    return changed


def _sql_type(f: dict) -> str:
    kind = f.get("type", "STRING").upper()
    base = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}.get(kind, kind)
    if base in ("RECORD", "STRUCT"):
        base = "STRUCT<" + ", ".join(f"`{sub['name']}` {_sql_type(sub)}" for sub in f.get("fields", [])) + ">"
    return f"ARRAY<{base}>" if (f.get("mode") or "").upper() == "REPEATED" else base


# ----------------------------------------------------------------------------------------------
# Client, server, fixtures
# ----------------------------------------------------------------------------------------------


def make_client(endpoint: str, project: str = PROJECT, *, token: str | None = None, location: str | None = None):
    """A real google.cloud.bigquery.Client for `endpoint` (the proxy's url). token=None: anonymous
    credentials (no Authorization header); token="x": sends ``Authorization: Bearer x``."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    if token is None:
        credentials = AnonymousCredentials()
    else:
        from google.oauth2.credentials import Credentials

        credentials = Credentials(token=token)  # no refresh token: used as is, never refreshed
    return bigquery.Client(
        project=project, credentials=credentials, location=location, client_options=ClientOptions(api_endpoint=endpoint)
    )


def create_dataset(client, dataset_id: str, project: str | None = None):
    from google.cloud import bigquery

    return client.create_dataset(bigquery.Dataset(f"{project or client.project}.{dataset_id}"), exists_ok=True)


@dataclass
class BigQueryEmulator:
    process: EmulatorProcess
    proxy: BigQueryProxy
    project: str = PROJECT

    @property
    def url(self) -> str:
        """Where clients go: the proxy."""
        return self.proxy.url

    @property
    def upstream_url(self) -> str:
        """The emulator itself (no fixes, no recording)."""
        return self.process.url

    def client(self, **kwargs):
        kwargs.setdefault("project", self.project)
        return make_client(self.url, **kwargs)

    def stop(self) -> None:
        self.proxy.close()
        self.process.stop()


@contextmanager
def run_bigquery_emulator(*, persistent: bool = True, project: str = PROJECT) -> Iterator[BigQueryEmulator]:
    process = start_emulator_process(persistent=persistent, project=project)
    proxy = BigQueryProxy(process.url, project=project).start()
    emulator = BigQueryEmulator(process, proxy, project)
    try:
        yield emulator
    finally:
        emulator.stop()


_shared: BigQueryEmulator | None = None
_shared_lock = threading.Lock()


def shared_emulator() -> BigQueryEmulator:
    """One emulator per test process, whichever test modules import the fixture (a session fixture
    imported into two modules would otherwise start two). Stopped at interpreter exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            process = start_emulator_process()
            _shared = BigQueryEmulator(process, BigQueryProxy(process.url).start())
            atexit.register(_shared.stop)
        return _shared


@dataclass
class BigQueryTestEnv:
    emulator: BigQueryEmulator
    client: object  # google.cloud.bigquery.Client
    dataset: str

    @property
    def proxy(self) -> BigQueryProxy:
        return self.emulator.proxy

    @property
    def project(self) -> str:
        return self.emulator.project

    @property
    def dataset_id(self) -> str:
        """'project.dataset'"""
        return f"{self.project}.{self.dataset}"

    def table_id(self, table: str) -> str:
        """'project.dataset.table'"""
        return f"{self.project}.{self.dataset}.{table}"

    def create_dataset(self):
        return create_dataset(self.client, self.dataset, self.project)


_dataset_counter = iter(range(1, 10**9))


@pytest.fixture(scope="session")
def bigquery_emulator() -> BigQueryEmulator:
    """The emulator and its proxy, started once per test process."""
    return shared_emulator()


@pytest.fixture
def bq(bigquery_emulator: BigQueryEmulator, request) -> Iterator[BigQueryTestEnv]:
    """A fresh dataset name (not created), a client on the proxy, the proxy with nothing recorded
    and no faults pending. The dataset, if made, is deleted afterwards."""
    name = re.sub(r"\W", "_", request.node.name)[:40]
    dataset = f"t{next(_dataset_counter)}_{uuid.uuid4().hex[:6]}_{name}"
    bigquery_emulator.proxy.clear()
    env = BigQueryTestEnv(bigquery_emulator, bigquery_emulator.client(), dataset)
    yield env
    proxy_errors = list(bigquery_emulator.proxy.errors)
    bigquery_emulator.proxy.clear()
    status, _ = bigquery_emulator.proxy._upstream(
        "DELETE", f"/bigquery/v2/projects/{env.project}/datasets/{dataset}?deleteContents=true"
    )[:2]
    assert status in (200, 204, 404), f"could not delete test dataset {dataset}: {status}"
    assert not proxy_errors, "the BigQuery proxy failed:\n" + "\n".join(proxy_errors)


@pytest.fixture
def bq_dataset(bq: BigQueryTestEnv) -> BigQueryTestEnv:
    """Same as `bq`, with the dataset created."""
    bq.create_dataset()
    bq.proxy.clear()
    return bq
