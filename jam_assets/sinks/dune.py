"""Dune, through its uploads API: the JSONL exports go up in batched NDJSON inserts, a ledger remembers what Dune has.

Dune's uploaded tables only grow: there is no row delete (only clearing or deleting a whole table),
an insert request is all-or-nothing, a created table cannot be altered, creating one costs 10
credits and every insert at least 1. So, per run (the hourly schedule), under an exclusive lock on
the ledger (`dune_ledger.lock` beside it: an overlapping run waits, then finds nothing left to do):

1. Every row sent carries `uploaded_at`, one TIMESTAMP per run, identical for all the rows of one
   minute file's upload however many requests it takes. It is strictly increasing from run to run
   (the ledger keeps the last one), in whole milliseconds (DuneSQL's TIMESTAMP is TIMESTAMP(3)).
2. Per table, the minute files whose export's sha256 differs from the ledger's (new, re-published
   with other content, or emptied) are read in key order and sent as NDJSON, as many lines per
   request as `max_request_bytes` allows; a large export is split at line boundaries. A minute file
   goes into the ledger once the request holding its last line got a 200. Tables are created
   (private unless `public_tables`) only when they have rows to send and the ledger does not list
   them; "already exists" is read from the status (409, or 400 with that error) and counts as done.
3. After the tables, one manifest insert into `<prefix>upload_manifest` lists each minute file
   uploaded (table, minute_file, uploaded_at, row_count, sha256), including minutes that now have
   no rows. The view below keeps, per minute file, the rows of its latest manifested upload: stale
   rows of a re-processed minute disappear (also when it now has none), and so do the rows of an
   upload that failed half-way or whose outcome was unknown (a timeout after sending), since those
   are never manifested. A failed manifest is sent again on the next run, with the same stamps.

       WITH latest AS (
           SELECT minute_file, max(uploaded_at) AS uploaded_at
           FROM dune.<namespace>.jam_upload_manifest
           WHERE table_name = 'jam_<table>'
           GROUP BY minute_file
       )
       SELECT t.*
       FROM dune.<namespace>.jam_<table> AS t
       JOIN latest ON t.minute_file = latest.minute_file AND t.uploaded_at = latest.uploaded_at

   (`latest_upload_view_sql` writes it for one table.)

Finding what changed costs one stat per day folder, not one per minute file: the ledger keeps each
day folder's mtime once every export in it was settled and is in Dune, and a day whose folder
mtime is unchanged is not listed. Exports are published by renaming a staged file into the day
folder (jam_assets/core/staging.py), which updates that folder's mtime, so a minute re-published a
month later is found and uploaded again without any hook in the publisher. (A file edited in place
would not be found in an old day; nothing here edits exports.)

Failures are per table: a table whose create or insert fails stops for this run, the others go on,
and `UploadReport.failure_message()` names each failed table. A row that does not fit the schema
fails its minute file (named in the message) before anything is sent; the other minute files of the
table still go. 429 and 5xx are retried with exponential backoff, honouring Retry-After (Dune
documents that any status but 200 means nothing was inserted); a transport error after a request
may have been sent is not retried within the run. Requests are spaced to stay under the plan's rate
limit for write endpoints (Free: 15 a minute, Plus: 70).

The API key is sent only as the X-DUNE-API-KEY header; it is redacted from every message.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
import requests

from ..core import schema
from ..core.minute_files import minute_start

DUNE_TYPES = {"STRING": "varchar", "INTEGER": "bigint", "TIMESTAMP": "timestamp", "DATE": "date"}
UPLOADED_AT = "uploaded_at"
MANIFEST = "upload_manifest"
MANIFEST_SCHEMA: tuple[dict[str, object], ...] = (
    {"name": "table_name", "type": "varchar", "nullable": False},
    {"name": "minute_file", "type": "varchar", "nullable": False},
    {"name": UPLOADED_AT, "type": "timestamp", "nullable": False},
    {"name": "row_count", "type": "bigint", "nullable": False},
    {"name": "sha256", "type": "varchar", "nullable": False},
)
DUNE_MAX_REQUEST_BYTES = 1_200_000_000  # "The maximum request size is 1.2GB" (uploads insert docs)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
LEDGER_FILE = "dune_ledger.sqlite"
LOCK_FILE = "dune_ledger.lock"
LOCK_POLL_SECONDS = 0.2
# A day folder modified this close to the scan could be modified again within the file system's
# timestamp granularity without its mtime changing: it is not marked done, so the next run lists it.
RACY_NS = 2_000_000_000
BIGINT = (-(2**63), 2**63 - 1)
_DAY_PART = {"year": re.compile(r"\d{4}"), "month": re.compile(r"\d{2}"), "day": re.compile(r"\d{2}")}
_MINUTE_NAME = re.compile(r"(\d{4})\.jsonl")


class DuneError(RuntimeError):
    """A Dune request or upload that failed; the message never holds the API key."""


class Log(Protocol):
    def info(self, msg: str) -> Any: ...
    def warning(self, msg: str) -> Any: ...
    def error(self, msg: str) -> Any: ...


@dataclass(frozen=True)
class DuneConfig:
    """Where and how to upload. `api_key` is kept out of repr (and so out of tracebacks' locals)."""

    api_key: str = field(repr=False)
    namespace: str
    base_url: str = "https://api.dune.com"
    table_prefix: str = "jam_"
    max_requests_per_minute: float = 12.0  # under the Free plan's 15 for write endpoints
    max_request_bytes: int = 200 * 1024 * 1024
    include_codec_encoded: bool = False  # the largest column by far; Free storage is 100 MB
    max_retries: int = 5
    backoff_seconds: float = 2.0
    timeout_seconds: float = 300.0
    public_tables: bool = False
    storage_cap_bytes: int = 100 * 10**6  # Free: 100 MB (Analyst 1 GB, Plus 15 GB)
    storage_warn_fraction: float = 0.8
    lock_wait_seconds: float = 600.0

    def dune_table(self, table: str) -> str:
        return self.table_prefix + table

    def ledger_key(self, table: str) -> str:
        """The ledger's name for a Dune table: the same export root may have gone to another namespace."""
        return f"{self.namespace}.{self.dune_table(table)}"


def dune_schema(table: str, include_codec: bool) -> list[dict[str, object]]:
    """The Dune columns of `table`: schema/<table>.json's, in order, then `uploaded_at`."""
    columns = [
        {"name": c.name, "type": DUNE_TYPES[c.type], "nullable": not c.required}
        for c in schema.columns(table)
        if include_codec or c.name != "codec_encoded"
    ]
    if any(c["name"] == UPLOADED_AT for c in columns):
        raise ValueError(f"schema/{table}.json has a column {UPLOADED_AT!r}, which the Dune upload adds itself")
    return [*columns, {"name": UPLOADED_AT, "type": "timestamp", "nullable": False}]


def latest_upload_view_sql(namespace: str, table: str, table_prefix: str = "jam_") -> str:
    """DuneSQL keeping, per minute file of `table` (per day of a per-day table), only the rows of its
    latest manifested upload. The manifest's `minute_file` of a per-day table holds its day, `YYYY/MM/DD`."""
    name = table_prefix + table
    if table in schema.DAY_TABLES:
        return (
            "WITH latest AS (\n"
            "    SELECT date(replace(minute_file, '/', '-')) AS day, max(uploaded_at) AS uploaded_at\n"
            f"    FROM dune.{namespace}.{table_prefix}{MANIFEST}\n"
            f"    WHERE table_name = '{name}'\n"
            "    GROUP BY 1\n"
            ")\n"
            "SELECT t.*\n"
            f"FROM dune.{namespace}.{name} AS t\n"
            "JOIN latest ON t.day = latest.day AND t.uploaded_at = latest.uploaded_at"
        )
    return (
        "WITH latest AS (\n"
        "    SELECT minute_file, max(uploaded_at) AS uploaded_at\n"
        f"    FROM dune.{namespace}.{table_prefix}{MANIFEST}\n"
        f"    WHERE table_name = '{name}'\n"
        "    GROUP BY minute_file\n"
        ")\n"
        "SELECT t.*\n"
        f"FROM dune.{namespace}.{name} AS t\n"
        "JOIN latest ON t.minute_file = latest.minute_file AND t.uploaded_at = latest.uploaded_at"
    )


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def _already_existed(response: requests.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("already_existed") is True


class DuneClient:
    """The two uploads endpoints this project uses, spaced under the rate limit, retried on 429/5xx."""

    def __init__(
        self, cfg: DuneConfig, sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic
    ):
        self.cfg = cfg
        self.sleep = sleep
        self.clock = clock
        self.session = requests.Session()
        self.session.headers["X-DUNE-API-KEY"] = cfg.api_key
        self.requests_sent = 0
        self._last_request: float | None = None

    def redact(self, text: str) -> str:
        return text.replace(self.cfg.api_key, "***") if self.cfg.api_key else text

    def _error(self, response: requests.Response) -> str:
        try:
            body = response.json()
            text = str(body.get("error") or body.get("message") or body) if isinstance(body, dict) else str(body)
        except ValueError:
            text = response.text
        return self.redact(text[:300])

    def _space(self) -> None:
        if self._last_request is not None:
            wait = self._last_request + 60.0 / self.cfg.max_requests_per_minute - self.clock()
            if wait > 0:
                self.sleep(wait)
        self._last_request = self.clock()

    def _post(self, path: str, *, resend_after_transport_error: bool, **kwargs: Any) -> requests.Response:
        url = self.cfg.base_url.rstrip("/") + path
        for attempt in range(self.cfg.max_retries + 1):
            self._space()
            self.requests_sent += 1
            try:
                response = self.session.post(url, timeout=self.cfg.timeout_seconds, **kwargs)
            except requests.RequestException as exc:
                # A connect timeout never reached Dune. Anything else may have been received and
                # applied: an insert is then not sent again with the same stamp (see the module doc).
                safe = resend_after_transport_error or isinstance(exc, requests.ConnectTimeout)
                if not safe or attempt == self.cfg.max_retries:
                    raise DuneError(f"POST {path}: {type(exc).__name__}: {self.redact(str(exc))[:300]}") from None
                self.sleep(self.cfg.backoff_seconds * 2**attempt)
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.cfg.max_retries:
                wait = _retry_after(response.headers.get("Retry-After"))
                self.sleep(wait if wait is not None else self.cfg.backoff_seconds * 2**attempt)
                continue
            return response
        raise AssertionError("unreachable: the last attempt returns or raises")

    def create_table(self, name: str, columns: list[dict[str, object]], description: str) -> str:
        """Create `namespace.name`; "created" on 2xx, "exists" when Dune says it already exists."""
        is_private = not self.cfg.public_tables
        body = {
            "namespace": self.cfg.namespace,
            "table_name": name,
            "description": description,
            "schema": columns,
            "is_private": is_private,
        }
        # Creating twice is harmless (the second answers "already exists"), so any failure may be resent.
        response = self._post("/api/v1/uploads", json=body, resend_after_transport_error=True)
        if response.ok:
            # An idempotent create may answer 2xx with `already_existed: true`. Its absence proves
            # nothing (dune-client #159, #160: real responses lacked it), and Dune's docs now say a
            # create of an existing table fails: the error answers below are the other way it shows.
            return "exists" if _already_existed(response) else "created"
        error = self._error(response)
        if response.status_code == 409 or (response.status_code == 400 and "already exist" in error.lower()):
            return "exists"
        hint = ""
        if response.status_code in (401, 403) and is_private:
            hint = " (if the plan cannot create private tables, set public_tables to create it public)"
        raise DuneError(f"creating {self.cfg.namespace}.{name} failed: HTTP {response.status_code} {error}{hint}")

    def insert(self, name: str, ndjson: bytes) -> None:
        path = f"/api/v1/uploads/{self.cfg.namespace}/{name}/insert"
        try:
            response = self._post(
                path, data=ndjson, headers={"Content-Type": "application/x-ndjson"}, resend_after_transport_error=False
            )
        except DuneError as exc:
            raise DuneError(
                f"{exc}: its rows may or may not be in Dune; they are sent again next run, and the view shows one copy"
            ) from None
        if not response.ok:
            raise DuneError(
                f"insert into {self.cfg.namespace}.{name} failed: HTTP {response.status_code} {self._error(response)}"
            )


@dataclass(frozen=True)
class MinuteRecord:
    """What the ledger knows of one minute file of one Dune table."""

    minute_file: str
    sha256: str
    size: int
    mtime_ns: int
    row_count: int
    uploaded_at: str
    manifested: bool


class Ledger:
    """What Dune has, in SQLite beside the exports: tables created (and their schema), minute files
    uploaded (sha256, stamp, manifested or not), day folders known to be done, bytes sent."""

    def __init__(self, path: Path):
        self.conn = sqlite3.connect(path)
        self.conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS dune_tables (
                dune_table TEXT PRIMARY KEY, schema_json TEXT NOT NULL, created_at TEXT NOT NULL,
                bytes_uploaded INTEGER NOT NULL DEFAULT 0);
            CREATE TABLE IF NOT EXISTS dune_minutes (
                dune_table TEXT NOT NULL, minute_file TEXT NOT NULL, sha256 TEXT NOT NULL,
                size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, row_count INTEGER NOT NULL,
                uploaded_at TEXT NOT NULL, manifested INTEGER NOT NULL,
                PRIMARY KEY (dune_table, minute_file)) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS dune_days (
                dune_table TEXT NOT NULL, day TEXT NOT NULL, mtime_ns INTEGER NOT NULL,
                PRIMARY KEY (dune_table, day)) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS dune_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            """
        )
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()

    def next_stamp(self, now: datetime) -> str:
        """This run's `uploaded_at`: now, but always at least a millisecond after the previous run's."""
        row = self.conn.execute("SELECT value FROM dune_meta WHERE key = 'last_uploaded_at'").fetchone()
        moment = now.replace(microsecond=now.microsecond // 1000 * 1000)
        if row is not None:
            previous = datetime.fromisoformat(row[0])
            moment = max(moment, previous + timedelta(milliseconds=1))
        stamp = _stamp(moment)
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO dune_meta VALUES ('last_uploaded_at', ?)", [stamp])
        return stamp

    def table_schema(self, dune_table: str) -> list[dict[str, object]] | None:
        row = self.conn.execute("SELECT schema_json FROM dune_tables WHERE dune_table = ?", [dune_table]).fetchone()
        return orjson.loads(row[0]) if row else None

    def record_table(self, dune_table: str, columns: list[dict[str, object]] | tuple[dict[str, object], ...]) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT OR IGNORE INTO dune_tables (dune_table, schema_json, created_at) VALUES (?, ?, ?)",
                [dune_table, orjson.dumps(list(columns)).decode(), datetime.now(UTC).isoformat()],
            )

    def minute(self, dune_table: str, minute_file: str) -> MinuteRecord | None:
        row = self.conn.execute(
            "SELECT minute_file, sha256, size, mtime_ns, row_count, uploaded_at, manifested FROM dune_minutes "
            "WHERE dune_table = ? AND minute_file = ?",
            [dune_table, minute_file],
        ).fetchone()
        return MinuteRecord(row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6])) if row else None

    def touch(self, dune_table: str, minute_file: str, size: int, mtime_ns: int) -> None:
        """The export was re-published with the same content: remember its new stat, not to hash it again."""
        with self.conn:
            self.conn.execute(
                "UPDATE dune_minutes SET size = ?, mtime_ns = ? WHERE dune_table = ? AND minute_file = ?",
                [size, mtime_ns, dune_table, minute_file],
            )

    def record_uploads(self, dune_table: str, minutes: list[MinuteRecord], sent_bytes: int) -> None:
        with self.conn:
            self.conn.executemany(
                "INSERT OR REPLACE INTO dune_minutes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        dune_table,
                        m.minute_file,
                        m.sha256,
                        m.size,
                        m.mtime_ns,
                        m.row_count,
                        m.uploaded_at,
                        int(m.manifested),
                    )
                    for m in minutes
                ],
            )
            self.conn.execute(
                "UPDATE dune_tables SET bytes_uploaded = bytes_uploaded + ? WHERE dune_table = ?",
                [sent_bytes, dune_table],
            )

    def unmanifested(self, dune_tables: list[str]) -> list[tuple[str, MinuteRecord]]:
        marks = ",".join("?" * len(dune_tables))
        rows = self.conn.execute(
            "SELECT dune_table, minute_file, sha256, size, mtime_ns, row_count, uploaded_at, manifested "
            f"FROM dune_minutes WHERE manifested = 0 AND dune_table IN ({marks}) ORDER BY dune_table, minute_file",
            dune_tables,
        ).fetchall()
        return [(r[0], MinuteRecord(r[1], r[2], r[3], r[4], r[5], r[6], False)) for r in rows]

    def record_manifested(self, entries: list[tuple[str, MinuteRecord]], manifest_table: str, sent_bytes: int) -> None:
        with self.conn:
            # Only the upload that was listed: a newer one of the same minute still needs its own entry.
            self.conn.executemany(
                "UPDATE dune_minutes SET manifested = 1 WHERE dune_table = ? AND minute_file = ? AND uploaded_at = ?",
                [(t, m.minute_file, m.uploaded_at) for t, m in entries],
            )
            self.conn.execute(
                "UPDATE dune_tables SET bytes_uploaded = bytes_uploaded + ? WHERE dune_table = ?",
                [sent_bytes, manifest_table],
            )

    def day_marks(self, dune_table: str) -> dict[str, int]:
        return dict(self.conn.execute("SELECT day, mtime_ns FROM dune_days WHERE dune_table = ?", [dune_table]))

    def mark_days(self, dune_table: str, marks: dict[str, int]) -> None:
        with self.conn:
            self.conn.executemany(
                "INSERT OR REPLACE INTO dune_days VALUES (?, ?, ?)",
                [(dune_table, day, mtime_ns) for day, mtime_ns in marks.items()],
            )

    def bytes_uploaded(self) -> int:
        return self.conn.execute("SELECT coalesce(sum(bytes_uploaded), 0) FROM dune_tables").fetchone()[0]

    def forget(self, dune_table: str) -> None:
        with self.conn:
            for ledger_table in ("dune_tables", "dune_minutes", "dune_days"):
                self.conn.execute(f"DELETE FROM {ledger_table} WHERE dune_table = ?", [dune_table])


@contextmanager
def ledger_lock(
    export_root: Path,
    wait_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[bool]:
    """Hold the exclusive upload lock (fcntl.flock, released when the file closes, also if the process dies).

    Yields False if another run still held it after `wait_seconds`."""
    with open(export_root / LOCK_FILE, "a+b") as f:
        deadline = clock() + wait_seconds
        held = False
        while not held:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
            except BlockingIOError:
                if clock() >= deadline:
                    break
                sleep(LOCK_POLL_SECONDS)
        yield held


def forget_table(export_root: Path, cfg: DuneConfig, table: str) -> None:
    """Forget everything the ledger knows of `table`'s Dune table, after deleting that table in Dune
    (e.g. because schema/<table>.json changed): the next run creates it again and uploads every export."""
    with ledger_lock(export_root, cfg.lock_wait_seconds) as held:
        if not held:
            raise DuneError("another Dune upload holds the ledger lock; try again when it is done")
        ledger = Ledger(export_root / LEDGER_FILE)
        try:
            ledger.forget(cfg.ledger_key(table))
        finally:
            ledger.close()


@dataclass
class Candidate:
    """An export whose stat differs from the ledger's: its content may have changed."""

    minute_file: str
    path: Path
    size: int
    mtime_ns: int


@dataclass
class TableScan:
    candidates: list[Candidate] = field(default_factory=list)
    days_listed: int = 0
    # day -> its folder's mtime when listed, for the days that may be marked done after the upload
    closable: dict[str, int] = field(default_factory=dict)


def _subdirs(path: Path, pattern: re.Pattern[str]) -> list[os.DirEntry[str]]:
    try:
        return sorted((e for e in os.scandir(path) if pattern.fullmatch(e.name) and e.is_dir()), key=lambda e: e.name)
    except FileNotFoundError:
        return []


def scan_table(base: Path, dune_table: str, ledger: Ledger, now: datetime, settle_seconds: float) -> TableScan:
    """The exports of one table that may need uploading: settled minutes in day folders changed since
    they were last done, whose size or mtime differs from the ledger's."""
    marks = ledger.day_marks(dune_table)
    scan = TableScan()
    started_ns = time.time_ns()
    for year in _subdirs(base, _DAY_PART["year"]):
        for month in _subdirs(Path(year.path), _DAY_PART["month"]):
            for day_dir in _subdirs(Path(month.path), _DAY_PART["day"]):
                day = f"{year.name}/{month.name}/{day_dir.name}"
                day_mtime = day_dir.stat().st_mtime_ns
                if marks.get(day) == day_mtime:
                    continue
                scan.days_listed += 1
                settled = True
                for entry in sorted(os.scandir(day_dir.path), key=lambda e: e.name):
                    m = _MINUTE_NAME.fullmatch(entry.name)
                    if m is None or not entry.is_file():
                        continue
                    key = f"{day}/{m.group(1)}"
                    try:
                        start = minute_start(key)
                    except ValueError:
                        continue
                    if start + timedelta(seconds=60 + settle_seconds) > now:
                        settled = False  # its minute may still be re-materialized with late lines
                        continue
                    st = entry.stat()
                    known = ledger.minute(dune_table, key)
                    if known is None or (known.size, known.mtime_ns) != (st.st_size, st.st_mtime_ns):
                        scan.candidates.append(Candidate(key, Path(entry.path), st.st_size, st.st_mtime_ns))
                if settled and day_mtime < started_ns - RACY_NS:
                    scan.closable[day] = day_mtime
    return scan


_DAY_NAME = re.compile(r"(\d{2})\.jsonl")


def scan_day_table(base: Path, dune_table: str, ledger: Ledger, now: datetime, settle_seconds: float) -> TableScan:
    """scan_table for a per-day table (leaderboard, quality_report): `YYYY/MM/DD.jsonl` files, listed by
    month folder; a day is settled once it is over plus the settle time. Keys are `YYYY/MM/DD`."""
    marks = ledger.day_marks(dune_table)
    scan = TableScan()
    started_ns = time.time_ns()
    for year in _subdirs(base, _DAY_PART["year"]):
        for month_dir in _subdirs(Path(year.path), _DAY_PART["month"]):
            month = f"{year.name}/{month_dir.name}"
            month_mtime = month_dir.stat().st_mtime_ns
            if marks.get(month) == month_mtime:
                continue
            scan.days_listed += 1
            settled = True
            for entry in sorted(os.scandir(month_dir.path), key=lambda e: e.name):
                m = _DAY_NAME.fullmatch(entry.name)
                if m is None or not entry.is_file():
                    continue
                key = f"{month}/{m.group(1)}"
                try:
                    day_start = datetime.strptime(key, "%Y/%m/%d").replace(tzinfo=UTC)
                except ValueError:
                    continue
                if day_start + timedelta(days=1, seconds=settle_seconds) > now:
                    settled = False  # the day can still change
                    continue
                st = entry.stat()
                known = ledger.minute(dune_table, key)
                if known is None or (known.size, known.mtime_ns) != (st.st_size, st.st_mtime_ns):
                    scan.candidates.append(Candidate(key, Path(entry.path), st.st_size, st.st_mtime_ns))
            if settled and month_mtime < started_ns - RACY_NS:
                scan.closable[month] = month_mtime
    return scan


class RowError(ValueError):
    """An export row that Dune would reject; the message names the minute file and line."""


class RowEncoder:
    """Turns export rows of one table into the NDJSON lines Dune's table takes (columns in schema order)."""

    def __init__(self, table: str, columns: list[dict[str, object]], stamp: str):
        self.table = table
        self.columns = [
            (str(c["name"]), str(c["type"]), bool(c["nullable"])) for c in columns if c["name"] != UPLOADED_AT
        ]
        self.known = {c.name for c in schema.columns(table)}
        self.stamp = stamp

    def line(self, raw: bytes, where: str) -> bytes:
        try:
            row = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise RowError(f"{where}: not JSON ({exc})") from None
        if not isinstance(row, dict):
            raise RowError(f"{where}: not a JSON object")
        unknown = row.keys() - self.known
        if unknown:
            raise RowError(f"{where}: columns not in schema/{self.table}.json: {', '.join(sorted(unknown))}")
        out: dict[str, object] = {}
        for name, dune_type, nullable in self.columns:
            value = row.get(name)
            if value is None:
                if not nullable:
                    raise RowError(f"{where}: required column {name} is missing or null")
            elif not _fits(dune_type, value):
                raise RowError(f"{where}: {name}={str(value)[:40]!r} is not a Dune {dune_type}")
            out[name] = value
        out[UPLOADED_AT] = self.stamp
        return orjson.dumps(out) + b"\n"


def _fits(dune_type: str, value: object) -> bool:
    if dune_type == "varchar":
        return isinstance(value, str)
    if dune_type == "bigint":
        return isinstance(value, int) and not isinstance(value, bool) and BIGINT[0] <= value <= BIGINT[1]
    if dune_type in ("timestamp", "date"):
        if not isinstance(value, str):
            return False
        try:
            (datetime if dune_type == "timestamp" else date).fromisoformat(value)
        except ValueError:
            return False
        return True
    raise ValueError(f"no check for Dune type {dune_type}")


@dataclass
class TableReport:
    files: int = 0  # minute files now in Dune as they are exported (rows sent, or emptied)
    rows: int = 0
    bytes: int = 0
    requests: int = 0
    days_listed: int = 0


@dataclass
class UploadReport:
    uploaded_at: str | None = None
    tables: dict[str, TableReport] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    storage_bytes: int = 0
    requests: int = 0
    skipped: str | None = None

    def failure_message(self) -> str:
        return (
            f"Dune upload failed for {len(self.failed)} table(s) ({', '.join(self.failed)}); their other "
            "minute files are uploaded, these are retried on the next run: "
            + "; ".join(f"{t}: {msg}" for t, msg in self.failed.items())
        )


class _Batch:
    """One insert request being filled, and the minute files whose last line it holds."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.completes: list[MinuteRecord] = []
        self.rows = 0


class _Uploader:
    def __init__(self, cfg: DuneConfig, ledger: Ledger, client: DuneClient, log: Log, stamp: str, report: UploadReport):
        self.cfg = cfg
        self.ledger = ledger
        self.client = client
        self.log = log
        self.stamp = stamp
        self.report = report

    def ensure_table(self, key: str, name: str, columns: list[dict[str, object]], description: str) -> None:
        """Create the Dune table unless the ledger lists it; refuse one created with other columns."""
        recorded = self.ledger.table_schema(key)
        if recorded is not None:
            if recorded != list(columns):
                had, want = {str(c["name"]): c for c in recorded}, {str(c["name"]): c for c in columns}
                added = [n for n in want if n not in had]
                removed = [n for n in had if n not in want]
                changed = [n for n in want if n in had and want[n] != had[n]]
                raise DuneError(
                    f"{key} was created with other columns (new: {added or 'none'}; gone: {removed or 'none'}; "
                    f"changed type or nullability: {changed or 'none'}) and Dune cannot alter a table: delete it "
                    f"(DELETE /api/v1/uploads/{self.cfg.namespace}/{name}), then forget it with "
                    "jam_assets.sinks.dune.forget_table; the next run creates it and uploads every export again"
                )
            return
        outcome = self.client.create_table(name, columns, description)
        if outcome == "created":
            self.report.created.append(name)
            self.log.info(f"dune: created {key} ({'public' if self.cfg.public_tables else 'private'})")
        else:
            # Nothing in Dune's answer says which columns it has; a mismatch shows as a rejected insert.
            self.log.info(f"dune: {key} already exists; inserting into it")
        self.ledger.record_table(key, columns)

    def table(self, export_root: Path, table: str, now: datetime, settle_seconds: float) -> None:
        key, name = self.cfg.ledger_key(table), self.cfg.dune_table(table)
        columns = dune_schema(table, self.cfg.include_codec_encoded)
        progress = self.report.tables.setdefault(table, TableReport())
        per_day = table in schema.DAY_TABLES
        scan = (scan_day_table if per_day else scan_table)(export_root / table, key, self.ledger, now, settle_seconds)
        progress.days_listed = scan.days_listed
        encoder = RowEncoder(table, columns, self.stamp)
        bad_minutes: list[str] = []
        settled: set[str] = set()  # candidates the ledger now has as they are (or that need nothing)
        batch = _Batch()
        ensured = False  # the table is created (or known to exist) once there is a first row to send

        def send(batch: _Batch) -> None:
            nonlocal ensured
            if batch.data:
                if not ensured:
                    self.ensure_table(key, name, columns, f"JAM telemetry: {table} (jam-etl; schema/{table}.json)")
                    ensured = True
                self.client.insert(name, bytes(batch.data))
                progress.requests += 1
            self.ledger.record_uploads(key, batch.completes, len(batch.data))
            settled.update(m.minute_file for m in batch.completes)
            progress.files += len(batch.completes)
            progress.rows += batch.rows
            progress.bytes += len(batch.data)
            if batch.data:
                self.log.info(
                    f"dune: {table}: request {progress.requests} sent; so far {progress.files} minute "
                    f"files, {progress.rows} rows, {progress.bytes} bytes"
                )

        try:
            for cand in scan.candidates:
                data = cand.path.read_bytes()
                sha = hashlib.sha256(data).hexdigest()
                known = self.ledger.minute(key, cand.minute_file)
                if known is not None and known.sha256 == sha:
                    self.ledger.touch(key, cand.minute_file, cand.size, cand.mtime_ns)
                    settled.add(cand.minute_file)
                    continue
                try:
                    lines = [
                        encoder.line(raw, f"{cand.minute_file} line {i}")
                        for i, raw in enumerate(data.splitlines(), 1)
                        if raw.strip()
                    ]
                    too_big = next((len(x) for x in lines if len(x) > self.cfg.max_request_bytes), None)
                    if too_big is not None:
                        raise RowError(f"{cand.minute_file}: a line of {too_big} bytes exceeds max_request_bytes")
                except RowError as exc:
                    bad_minutes.append(str(exc))
                    continue
                if not lines and known is None:
                    settled.add(cand.minute_file)  # empty, never uploaded: nothing in Dune to supersede
                    continue
                for line in lines:
                    if batch.data and len(batch.data) + len(line) > self.cfg.max_request_bytes:
                        send(batch)
                        batch = _Batch()
                    batch.data += line
                batch.completes.append(
                    MinuteRecord(cand.minute_file, sha, cand.size, cand.mtime_ns, len(lines), self.stamp, False)
                )
                batch.rows += len(lines)
            send(batch)
        except (DuneError, OSError) as exc:
            self.report.failed[table] = str(exc)
            self.log.error(f"dune: {table}: {exc}")
        if bad_minutes:
            message = "rows Dune would reject, these minute files are not uploaded: " + "; ".join(bad_minutes)
            self.report.failed[table] = "; ".join(filter(None, [self.report.failed.get(table), message]))
            self.log.error(f"dune: {table}: {message}")
        # A day is done once every export in it is in the ledger as it is; the others are listed again.
        folder = 7 if per_day else 10  # a per-day table's folders are months (YYYY/MM), the others' days
        open_days = {c.minute_file[:folder] for c in scan.candidates if c.minute_file not in settled}
        self.ledger.mark_days(key, {d: m for d, m in scan.closable.items() if d not in open_days})
        if progress.files:
            self.log.info(
                f"dune: {table}: {progress.files} minute files, {progress.rows} rows, {progress.bytes} "
                f"bytes in {progress.requests} requests"
            )

    def manifest(self, tables: list[str]) -> None:
        """List every uploaded, not yet manifested minute file in the manifest table, so the view shows it."""
        keys = {self.cfg.ledger_key(t): self.cfg.dune_table(t) for t in tables}
        entries = self.ledger.unmanifested(list(keys))
        if not entries:
            return
        key, name = self.cfg.ledger_key(MANIFEST), self.cfg.dune_table(MANIFEST)
        try:
            self.ensure_table(
                key,
                name,
                list(MANIFEST_SCHEMA),
                "JAM telemetry: one row per upload of a minute file to a jam table (jam-etl)",
            )
            batch: list[tuple[str, MinuteRecord]] = []
            data = bytearray()
            for ledger_key, m in entries:
                line = (
                    orjson.dumps(
                        {
                            "table_name": keys[ledger_key],
                            "minute_file": m.minute_file,
                            UPLOADED_AT: m.uploaded_at,
                            "row_count": m.row_count,
                            "sha256": m.sha256,
                        }
                    )
                    + b"\n"
                )
                if data and len(data) + len(line) > self.cfg.max_request_bytes:
                    self.client.insert(name, bytes(data))
                    self.ledger.record_manifested(batch, key, len(data))
                    batch, data = [], bytearray()
                batch.append((ledger_key, m))
                data += line
            self.client.insert(name, bytes(data))
            self.ledger.record_manifested(batch, key, len(data))
            self.log.info(f"dune: manifest lists {len(entries)} new uploads of minute files")
        except DuneError as exc:
            self.report.failed[MANIFEST] = f"{exc} (the rows are in Dune; the view shows them once this is sent)"
            self.log.error(f"dune: {MANIFEST}: {exc}")


def upload(
    export_root: Path,
    cfg: DuneConfig,
    log: Log,
    *,
    now: datetime | None = None,
    settle_seconds: float = 3600.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> UploadReport:
    """Upload every settled export Dune does not have as it is now; see the module doc. Never raises for a
    table's failure: the report says which failed and why (`failure_message`)."""
    now = now or datetime.now(UTC)
    export_root.mkdir(parents=True, exist_ok=True)
    report = UploadReport()
    with ledger_lock(export_root, cfg.lock_wait_seconds, sleep, clock) as held:
        if not held:
            report.skipped = f"another Dune upload still held the ledger lock after {cfg.lock_wait_seconds:g} s"
            log.warning(f"dune: {report.skipped}; it uploads what is pending, so this run does nothing")
            return report
        ledger = Ledger(export_root / LEDGER_FILE)
        client = DuneClient(cfg, sleep, clock)
        try:
            report.uploaded_at = ledger.next_stamp(datetime.now(UTC))
            uploader = _Uploader(cfg, ledger, client, log, report.uploaded_at, report)
            for table in (*schema.ALL_TABLES, *schema.DAY_TABLES):
                uploader.table(export_root, table, now, settle_seconds)
            uploader.manifest([*schema.ALL_TABLES, *schema.DAY_TABLES])
            report.storage_bytes = ledger.bytes_uploaded()
        finally:
            report.requests = client.requests_sent
            ledger.close()
    if report.storage_bytes >= cfg.storage_warn_fraction * cfg.storage_cap_bytes:
        log.warning(
            f"dune: about {report.storage_bytes / 1e6:.1f} MB uploaded so far (NDJSON bytes, superseded uploads "
            f"included: Dune keeps them), {report.storage_bytes / cfg.storage_cap_bytes:.0%} of the "
            f"{cfg.storage_cap_bytes / 1e6:g} MB storage cap configured (storage_cap_bytes)"
        )
    return report
