"""A stand-in for Dune's uploads API with real semantics, on 127.0.0.1 (nothing real runs offline).

What it implements, after docs.dune.com (uploads create and insert, rate limits) and the OpenAPI
specs in duneanalytics/dune-docs:

- `POST /api/v1/uploads` (create): the `X-DUNE-API-KEY` header must be the key; the key may write
  only its namespaces (401 otherwise); the body must be JSON with `namespace`, `table_name` and a
  non-empty `schema` of `{name, type, nullable}` (nullable defaults to true), names lowercase and not
  starting with a digit or a special character, types among DuneSQL's upload types. A new table is
  stored (namespace, name, schema, is_private, description) and answered 201 with Dune's success
  body (namespace, table_name, full_name, example_query, message). A table that exists is refused:
  409 `{"error": "This table already exists"}` by default (`exists_answer` sets another status and
  body: a 400, since Dune's docs say only that the request fails, or an idempotent 200 with
  `already_existed: true`). A plan without private
  tables (`private_tables=False`) answers 401 to `is_private: true`.
- `POST /api/v1/uploads/{namespace}/{table}/insert`: the key, the table (404 if unknown), a body no
  larger than `max_request_bytes` (1.2 GB like Dune unless set smaller; 413 beyond), Content-Type
  `application/x-ndjson`, every line a JSON object whose keys are exactly the table's columns, every
  value of its column's type (varchar, bigint and integer in range, double, boolean, timestamp and
  date in ISO 8601, varbinary as 0x-hex or base64, int256/uint256) and null only where nullable.
  Any failure answers 400 naming the line and column, and stores nothing: all or nothing per
  request. Success stores the rows and answers 200 `{rows_written, bytes_written, name}`.
- The write endpoints' rate limit: past `requests_per_minute` requests in the last 60 s (of
  `clock`, which tests may share with the client), 429 with Retry-After in whole seconds.
- Scripted trouble: `fail_next` answers the next matching requests with a status (and headers)
  without applying them; `lose_response_next` applies the next matching request, then drops the
  connection unanswered (a client timeout after Dune has the rows). `insert_delay_seconds` makes
  inserts take that long, to overlap runs.
- `query(sql)` runs SQL over the stored rows in DuckDB, the tables named `dune.<namespace>.<table>`
  as in Dune; `latest_rows` runs the project's dedup view (jam_assets.sinks.dune) that way.

What it does not implement: CSV inserts, clear, delete, list, the CSV upload endpoint, credits,
storage caps, per-IP limits, concurrent-insert limits per table, and Dune's exact error texts
(only their statuses and the `{"error": ...}` shape). It keys requests on the namespaces given,
not on accounts.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import duckdb

from jam_assets.sinks.dune import latest_upload_view_sql

DUNE_MAX_REQUEST_BYTES = 1_200_000_000
TYPES = {"varchar", "bigint", "integer", "double", "boolean", "timestamp", "date", "varbinary", "int256", "uint256"}
DUCKDB_TYPES = {
    "varchar": "VARCHAR",
    "bigint": "BIGINT",
    "integer": "INTEGER",
    "double": "DOUBLE",
    "boolean": "BOOLEAN",
    "timestamp": "TIMESTAMP",
    "date": "DATE",
    "varbinary": "VARCHAR",
    "int256": "HUGEINT",
    "uint256": "UHUGEINT",
}
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_INSERT = re.compile(r"/api/v1/uploads/([^/]+)/([^/]+)/insert")
_RANGES = {
    "bigint": (-(2**63), 2**63 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "int256": (-(2**255), 2**255 - 1),
    "uint256": (0, 2**256 - 1),
}


class FakeClock:
    """Monotonic time that only moves when someone sleeps: share it between client and stand-in."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self.t

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.t += max(seconds, 0.0)


@dataclass
class StoredTable:
    namespace: str
    name: str
    columns: list[dict]
    is_private: bool
    description: str
    rows: list[dict] = field(default_factory=list)


@dataclass
class Logged:
    method: str
    path: str
    status: int | None  # None: the connection was dropped unanswered
    headers: dict[str, str]
    body: bytes
    at: float  # the stand-in's clock when the request arrived


@dataclass
class _Fault:
    path_contains: str
    status: int | None  # None: apply, then drop the connection
    headers: dict[str, str]
    body: dict


def _fits(dune_type: str, value: object) -> bool:
    if dune_type == "varchar":
        return isinstance(value, str)
    if dune_type in _RANGES:
        if dune_type in ("int256", "uint256") and isinstance(value, str) and re.fullmatch(r"-?\d+", value):
            value = int(value)
        low, high = _RANGES[dune_type]
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    if dune_type == "double":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if dune_type == "boolean":
        return isinstance(value, bool)
    if dune_type in ("timestamp", "date"):
        if not isinstance(value, str):
            return False
        try:
            if dune_type == "date":
                date.fromisoformat(value)
            else:
                datetime.fromisoformat(value)
        except ValueError:
            return False
        return True
    if dune_type == "varbinary":
        if not isinstance(value, str):
            return False
        if value.startswith("0x"):
            return len(value) % 2 == 0 and re.fullmatch(r"[0-9a-fA-F]*", value[2:]) is not None
        try:
            base64.b64decode(value, validate=True)
        except binascii.Error:
            return False
        return True
    raise AssertionError(dune_type)


class DuneStandIn:
    def __init__(
        self,
        api_key: str,
        namespaces: tuple[str, ...] = ("jamteam",),
        *,
        max_request_bytes: int = DUNE_MAX_REQUEST_BYTES,
        requests_per_minute: int | None = 15,
        clock: Callable[[], float] = time.monotonic,
        exists_answer: tuple[int, dict] | None = None,
        private_tables: bool = True,
        insert_delay_seconds: float = 0.0,
    ):
        self.api_key = api_key
        self.namespaces = namespaces
        self.max_request_bytes = max_request_bytes
        self.requests_per_minute = requests_per_minute
        self.clock = clock
        self.exists_answer = exists_answer or (409, {"error": "This table already exists"})
        self.private_tables = private_tables
        self.insert_delay_seconds = insert_delay_seconds
        self.tables: dict[tuple[str, str], StoredTable] = {}
        self.log: list[Logged] = []
        self._faults: list[_Fault] = []
        self._recent: deque[float] = deque()
        self._lock = threading.RLock()

    # -- scripting and inspection -------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        path_contains: str = "",
        times: int = 1,
        headers: dict | None = None,
        body: dict | None = None,
    ) -> None:
        for _ in range(times):
            self._faults.append(_Fault(path_contains, status, headers or {}, body or {"error": f"scripted {status}"}))

    def lose_response_next(self, path_contains: str) -> None:
        self._faults.append(_Fault(path_contains, None, {}, {}))

    def requests(self, kind: str = "") -> list[Logged]:
        """Logged requests: kind "create", "insert", or "" for all."""
        with self._lock:
            if kind == "create":
                return [r for r in self.log if r.path == "/api/v1/uploads"]
            if kind == "insert":
                return [r for r in self.log if r.path.endswith("/insert")]
            return list(self.log)

    def rows(self, namespace: str, name: str) -> list[dict]:
        with self._lock:
            return list(self.tables[(namespace, name)].rows)

    def query(self, sql: str) -> list[dict]:
        """Run SQL over the stored rows, the tables named `dune.<namespace>.<table>` as in DuneSQL."""
        with self._lock:
            tables = [(t, list(t.rows)) for t in self.tables.values()]
        con = duckdb.connect()
        try:
            con.execute("ATTACH ':memory:' AS dune")
            for t, rows in tables:
                con.execute(f'CREATE SCHEMA IF NOT EXISTS dune."{t.namespace}"')
                cols = ", ".join(f'"{c["name"]}" {DUCKDB_TYPES[c["type"]]}' for c in t.columns)
                con.execute(f'CREATE TABLE dune."{t.namespace}"."{t.name}" ({cols})')
                if rows:
                    names = [c["name"] for c in t.columns]
                    con.executemany(
                        f'INSERT INTO dune."{t.namespace}"."{t.name}" VALUES ({", ".join("?" * len(names))})',
                        [[self._duck_value(c["type"], r[c["name"]]) for c in t.columns] for r in rows],
                    )
            cursor = con.execute(sql)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]
        finally:
            con.close()

    def latest_rows(self, namespace: str, table: str, table_prefix: str = "jam_") -> list[dict]:
        return self.query(latest_upload_view_sql(namespace, table, table_prefix))

    @staticmethod
    def _duck_value(dune_type: str, value: object) -> object:
        if value is None:
            return None
        if dune_type == "timestamp":
            moment = datetime.fromisoformat(str(value))
            return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
        return value

    def drop_table(self, namespace: str, name: str) -> None:
        """What an operator's delete in Dune does (its UI, or DELETE /api/v1/uploads/...): the table and its rows go."""
        with self._lock:
            del self.tables[(namespace, name)]

    # -- the server --------------------------------------------------------------------------------

    def __enter__(self) -> DuneStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                path = urlparse(self.path).path
                at = standin.clock()
                answer = standin._handle(path, headers, body)
                with standin._lock:
                    standin.log.append(Logged("POST", path, answer[0] if answer else None, headers, body, at))
                if answer is None:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                status, extra, payload = answer
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, dict] | None:
        with self._lock:
            if headers.get("x-dune-api-key") != self.api_key:
                return 401, {}, {"error": "invalid API Key"}
            fault = next((f for f in self._faults if f.path_contains in path), None)
            if fault is not None:
                self._faults.remove(fault)
                if fault.status is not None:
                    return fault.status, fault.headers, fault.body
            limited = self._rate_limited()
            if limited is not None:
                return limited
        if path == "/api/v1/uploads":
            answer = self._create(headers, body)
        elif m := _INSERT.fullmatch(path):
            answer = self._insert(m.group(1), m.group(2), headers, body)
        else:
            answer = 404, {}, {"error": f"the stand-in has no POST {path}"}
        return None if fault is not None else answer

    def _rate_limited(self) -> tuple[int, dict, dict] | None:
        if self.requests_per_minute is None:
            return None
        now = self.clock()
        while self._recent and self._recent[0] <= now - 60:
            self._recent.popleft()
        if len(self._recent) >= self.requests_per_minute:
            wait = max(1, math.ceil(self._recent[0] + 60 - now))
            return 429, {"Retry-After": str(wait)}, {"error": "Too many requests"}
        self._recent.append(now)
        return None

    def _create(self, headers: dict[str, str], body: bytes) -> tuple[int, dict, dict]:
        if not headers.get("content-type", "").startswith("application/json"):
            return 400, {}, {"error": "Content-Type header is not application/json"}
        try:
            req = json.loads(body)
        except ValueError:
            return 400, {}, {"error": "the body is not JSON"}
        if (
            not isinstance(req, dict)
            or not isinstance(req.get("namespace"), str)
            or not isinstance(req.get("table_name"), str)
        ):
            return 400, {}, {"error": "namespace and table_name are required strings"}
        ns, name = req["namespace"], req["table_name"]
        if ns not in self.namespaces:
            return 401, {}, {"error": f"You are not authorized to create a table under the '{ns}' namespace"}
        if not _NAME.fullmatch(name):
            return 400, {}, {"error": f"invalid table name {name!r}"}
        columns = req.get("schema")
        if not isinstance(columns, list) or not columns:
            return 400, {}, {"error": "schema must be a non-empty list of columns"}
        seen = set()
        normalized = []
        for c in columns:
            if not isinstance(c, dict) or not isinstance(c.get("name"), str) or c.get("type") not in TYPES:
                return 400, {}, {"error": f"invalid column {c!r}: name and a type among {sorted(TYPES)} are required"}
            if not _NAME.fullmatch(c["name"]) or c["name"] in seen:
                return 400, {}, {"error": f"invalid or repeated column name {c['name']!r}"}
            nullable = c.get("nullable", True)
            if not isinstance(nullable, bool):
                return 400, {}, {"error": f"column {c['name']}: nullable must be true or false"}
            seen.add(c["name"])
            normalized.append({"name": c["name"], "type": c["type"], "nullable": nullable})
        is_private = bool(req.get("is_private", False))
        with self._lock:
            if (ns, name) in self.tables:
                status, payload = self.exists_answer
                return status, {}, payload
            if is_private and not self.private_tables:
                return 401, {}, {"error": "You are not allowed to create private tables on your plan"}
            self.tables[(ns, name)] = StoredTable(ns, name, normalized, is_private, str(req.get("description", "")))
        return (
            201,
            {},
            {
                "namespace": ns,
                "table_name": name,
                "full_name": f"dune.{ns}.{name}",
                "example_query": f"select * from dune.{ns}.{name} limit 10",
                "message": "Table created successfully",
            },
        )

    def _insert(self, ns: str, name: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, dict]:
        if ns not in self.namespaces:
            return 401, {}, {"error": f"You are not authorized to write to the '{ns}' namespace"}
        with self._lock:
            table = self.tables.get((ns, name))
        if table is None:
            return 404, {}, {"error": f"Table dune.{ns}.{name} not found"}
        if len(body) > self.max_request_bytes:
            return 413, {}, {"error": f"request of {len(body)} bytes exceeds the maximum of {self.max_request_bytes}"}
        content_type = headers.get("content-type", "").split(";")[0].strip()
        if content_type != "application/x-ndjson":
            return 400, {}, {"error": f"Content-Type {content_type!r}: the stand-in takes only application/x-ndjson"}
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return 400, {}, {"error": "the body is not UTF-8"}
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if not lines:
            return 400, {}, {"error": "no rows in the request"}
        names = [c["name"] for c in table.columns]
        rows = []
        for n, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
            except ValueError:
                return 400, {}, {"error": f"line {n}: not valid JSON"}
            if not isinstance(row, dict):
                return 400, {}, {"error": f"line {n}: not a JSON object"}
            unknown, missing = sorted(row.keys() - set(names)), [c for c in names if c not in row]
            if unknown or missing:
                return 400, {}, {"error": f"line {n}: unknown columns {unknown}, missing columns {missing}"}
            for c in table.columns:
                value = row[c["name"]]
                if value is None and not c["nullable"]:
                    return 400, {}, {"error": f"line {n}: column {c['name']} is not nullable"}
                if value is not None and not _fits(c["type"], value):
                    return 400, {}, {"error": f"line {n}: column {c['name']}: {value!r} is not a {c['type']}"}
            rows.append(row)
        if self.insert_delay_seconds:
            time.sleep(self.insert_delay_seconds)
        with self._lock:
            table.rows.extend(rows)
        return 200, {}, {"rows_written": len(rows), "bytes_written": len(body), "name": f"dune.{ns}.{name}"}
