"""Dune: hourly batched inserts of the JSONL exports through Dune's uploads API, with a durable ledger.

- Tables are created from schema/*.json (`POST /api/v1/uploads`); "already exists" counts as success.
- Each run gathers, per table, the exported minute files not yet in the ledger (or changed since),
  and inserts them as NDJSON (`POST /api/v1/uploads/{namespace}/{table}/insert`) in as few requests
  as the size cap allows. Only after a 200 are those minute files written to the ledger, in one
  SQLite transaction: a minute is never skipped, and never inserted twice unless a request timed
  out ambiguously (then the README's dedup view hides the copy: every row keeps minute_file and
  line_no).
- 429 and 5xx are retried with exponential backoff (Retry-After honoured); requests are spaced to
  stay under the plan's rate limit (Free: 15 per minute).
- `codec_encoded` is left out by default (Dune's storage caps).
- The API key comes from DUNE_API_KEY via dg.EnvVar and is never logged or put in metadata or errors.
"""


import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import orjson
import requests

from ..core import schema
from ..core.minute_files import minute_start
from .settings import JamSettings

DUNE_TYPES = {"STRING": "varchar", "INTEGER": "bigint", "TIMESTAMP": "timestamp"}
RETRY_STATUSES = {429, 500, 502, 503, 504}


class DuneError(RuntimeError):
    pass


def dune_schema(table: str, include_codec: bool) -> list[dict[str, object]]:
    return [
        {"name": c.name, "type": DUNE_TYPES[c.type], "nullable": not c.required}
        for c in schema.columns(table)
        if include_codec or c.name != "codec_encoded"
    ]


class DuneResource(dg.ConfigurableResource):
    """Dune's uploads API. `api_key` should always be `dg.EnvVar("DUNE_API_KEY")`."""

    api_key: str
    namespace: str
    base_url: str = "https://api.dune.com"
    table_prefix: str = "jam_"
    max_requests_per_minute: float = 12.0  # under the Free plan's 15
    max_request_bytes: int = 200 * 1024 * 1024
    include_codec_encoded: bool = False
    max_retries: int = 5
    backoff_seconds: float = 2.0
    timeout_seconds: float = 300.0

    def client(self, sleep: Callable[[float], None] = time.sleep) -> "DuneClient":
        return DuneClient(self, sleep)


class DuneClient:
    def __init__(self, cfg: DuneResource, sleep: Callable[[float], None]):
        self.cfg = cfg
        self.sleep = sleep
        self.session = requests.Session()
        self.session.headers["X-DUNE-API-KEY"] = cfg.api_key
        self._last_request = 0.0
        self.requests = 0

    def _redact(self, text: str) -> str:
        return text.replace(self.cfg.api_key, "***") if self.cfg.api_key else text

    def _post(self, path: str, *, json_body: object = None, data: bytes | None = None, content_type: str | None = None):
        url = self.cfg.base_url.rstrip("/") + path
        gap = 60.0 / self.cfg.max_requests_per_minute
        for attempt in range(self.cfg.max_retries + 1):
            wait = self._last_request + gap - time.monotonic()
            if wait > 0:
                self.sleep(wait)
            self._last_request = time.monotonic()
            self.requests += 1
            headers = {"Content-Type": content_type} if content_type else {}
            try:
                response = self.session.post(url, json=json_body, data=data, headers=headers, timeout=self.cfg.timeout_seconds)
            except requests.RequestException as exc:
                if attempt == self.cfg.max_retries:
                    raise DuneError(f"POST {path} failed: {self._redact(type(exc).__name__)}") from None
                self.sleep(self.cfg.backoff_seconds * 2**attempt)
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.cfg.max_retries:
                retry_after = response.headers.get("Retry-After", "")
                self.sleep(float(retry_after) if retry_after.isdigit() else self.cfg.backoff_seconds * 2**attempt)
                continue
            return response
        raise AssertionError("unreachable")

    def create_table(self, table: str) -> str:
        body = {
            "namespace": self.cfg.namespace,
            "table_name": self.cfg.table_prefix + table,
            "description": f"JAM telemetry: {table} (jam-etl; schema/{table}.json)",
            "schema": dune_schema(table, self.cfg.include_codec_encoded),
            "is_private": False,
        }
        response = self._post("/api/v1/uploads", json_body=body)
        if response.ok:
            return "created"
        if response.status_code in (400, 409) and "already exist" in response.text.lower():
            return "exists"
        raise DuneError(f"creating {body['table_name']} failed: HTTP {response.status_code} {self._redact(response.text[:300])}")

    def insert(self, table: str, ndjson: bytes) -> None:
        path = f"/api/v1/uploads/{self.cfg.namespace}/{self.cfg.table_prefix}{table}/insert"
        response = self._post(path, data=ndjson, content_type="application/x-ndjson")
        if not response.ok:
            raise DuneError(f"insert into {self.cfg.table_prefix}{table} failed: HTTP {response.status_code} "
                            f"{self._redact(response.text[:300])}")


class Ledger:
    """What Dune already has: (table, minute_file) -> the export's size and mtime when it was inserted."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path)
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS inserted (tbl TEXT, minute_file TEXT, signature TEXT, rows INTEGER, "
            "inserted_at TEXT, PRIMARY KEY (tbl, minute_file))"
        )
        self.conn.commit()

    def signatures(self, table: str) -> dict[str, str]:
        return dict(self.conn.execute("SELECT minute_file, signature FROM inserted WHERE tbl = ?", [table]))

    def record(self, table: str, entries: list[tuple[str, str, int]]) -> None:
        now = datetime.now(timezone.utc).isoformat()
        with self.conn:
            self.conn.executemany(
                "INSERT OR REPLACE INTO inserted VALUES (?, ?, ?, ?, ?)", [(table, k, sig, n, now) for k, sig, n in entries]
            )

    def close(self) -> None:
        self.conn.close()


@dataclass
class Pending:
    minute_file: str
    path: Path
    signature: str


def pending_minutes(export_root: Path, table: str, ledger: Ledger, now: datetime, settle_seconds: float) -> list[Pending]:
    """Exported minute files of `table` that Dune does not have (or whose export changed since)."""
    done = ledger.signatures(table)
    out = []
    base = export_root / table
    for path in sorted(base.rglob("*.jsonl")):
        key = str(path.relative_to(base))[: -len(".jsonl")]
        try:
            if minute_start(key) + timedelta(seconds=60 + settle_seconds) > now:
                continue  # its minute may still be re-materialized with late lines
        except ValueError:
            continue
        st = path.stat()
        signature = f"{st.st_size}-{st.st_mtime_ns}"
        if done.get(key) != signature:
            out.append(Pending(key, path, signature))
    return out


def _ndjson(path: Path, include_codec: bool) -> tuple[bytes, int]:
    data = path.read_bytes()
    if include_codec or not data:
        return data, data.count(b"\n")
    lines = []
    for line in data.splitlines():
        row = orjson.loads(line)
        row.pop("codec_encoded", None)
        lines.append(orjson.dumps(row))
    return b"".join(line + b"\n" for line in lines), len(lines)


def upload(export_root: Path, dune: DuneResource, log, now: datetime | None = None, settle_seconds: float = 3600,
           sleep: Callable[[float], None] = time.sleep) -> dict[str, int]:
    """Insert every pending minute file of every table into Dune. Returns rows inserted per table."""
    now = now or datetime.now(timezone.utc)
    client = dune.client(sleep)
    ledger = Ledger(export_root / "dune_ledger.sqlite")
    inserted: dict[str, int] = {}
    failures = []
    try:
        for table in schema.ALL_TABLES:
            todo = pending_minutes(export_root, table, ledger, now, settle_seconds)
            if not todo:
                continue
            client.create_table(table)
            batch: list[tuple[Pending, bytes, int]] = []
            size = 0
            for item in todo + [None]:
                if item is not None:
                    data, rows = _ndjson(item.path, dune.include_codec_encoded)
                if item is None or (batch and size + len(data) > dune.max_request_bytes):
                    payload = b"".join(d for _, d, _ in batch)
                    try:
                        if payload:
                            client.insert(table, payload)
                    except DuneError as exc:
                        failures.append(str(exc))
                        log.error(str(exc))
                        break  # keep order: later minutes wait for the next run
                    ledger.record(table, [(p.minute_file, p.signature, n) for p, _, n in batch])
                    inserted[table] = inserted.get(table, 0) + sum(n for _, _, n in batch)
                    log.info(f"dune: {table}: inserted {sum(n for _, _, n in batch)} rows from {len(batch)} minute files")
                    batch, size = [], 0
                if item is not None:
                    batch.append((item, data, rows))
                    size += len(data)
    finally:
        ledger.close()
    if failures:
        raise DuneError(f"{len(failures)} Dune insert(s) failed; they are retried on the next run: " + "; ".join(failures))
    return inserted


@dg.op(description="Insert closed, exported minute files into Dune (batched, ledgered).")
def dune_upload(context: dg.OpExecutionContext, settings: JamSettings, dune: DuneResource) -> dict:
    inserted = upload(settings.export_root, dune, context.log, settle_seconds=settings.watch_seconds)
    context.add_output_metadata({"rows_inserted": sum(inserted.values()), "by_table": inserted})
    return inserted


@dg.job(description="Hourly Dune upload of the JSONL exports (see jam_assets/defs/dune.py).")
def dune_upload_job():
    dune_upload()


def dune_schedule(running: bool) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="hourly_dune_upload",
        job=dune_upload_job,
        cron_schedule="7 * * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED,
    )


def dune_resources() -> dict[str, object]:
    if not os.environ.get("DUNE_API_KEY"):
        return {}
    return {
        "dune": DuneResource(
            api_key=dg.EnvVar("DUNE_API_KEY"),
            namespace=os.environ.get("DUNE_NAMESPACE") or "jam",
        )
    }
