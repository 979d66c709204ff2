"""Small local HTTP servers standing in for BigQuery's REST API and Dune's uploads API.

What they are honest about: they implement only the calls this project makes, record every
request exactly as the real client libraries send it, and answer with the minimal resources those
clients accept. They do not run SQL, enforce quotas or store rows: tests assert on the requests
(schema, partitioning, clustering, load configuration, uploaded bytes, MERGE text and parameters,
headers), not on query results. The live BigQuery test covers what only BigQuery can.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlparse


@dataclass
class Request:
    method: str
    path: str
    query: dict
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class FakeServer:
    handle: Callable[["FakeServer", Request], tuple[int, dict, bytes]]
    requests: list[Request] = field(default_factory=list)
    state: dict = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def __enter__(self) -> "FakeServer":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _do(self):
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                req = Request(self.command, url.path, parse_qs(url.query), {k.lower(): v for k, v in self.headers.items()}, body)
                fake.requests.append(req)
                try:
                    status, headers, payload = fake.handle(fake, req)
                except Exception as exc:  # a fake that cannot answer says why, loudly
                    import traceback

                    fake.errors.append(traceback.format_exc())
                    status, headers, payload = _json(500, {"error": {"code": 500, "message": f"fake failed: {exc!r}"}})
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _do

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _json(status: int, obj) -> tuple[int, dict, bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(obj).encode()


_TABLE = re.compile(r"/bigquery/v2/projects/([^/]+)/datasets/([^/]+)/tables(?:/([^/]+))?$")
_JOBS = re.compile(r"(?:/upload)?/bigquery/v2/projects/([^/]+)/jobs(?:/([^/]+))?$")
_QUERIES = re.compile(r"/bigquery/v2/projects/([^/]+)/queries/([^/]+)$")


def bigquery_handler(fake: FakeServer, req: Request) -> tuple[int, dict, bytes]:
    tables = fake.state.setdefault("tables", {})
    jobs = fake.state.setdefault("jobs", {})
    if m := _TABLE.match(req.path):
        project, dataset, table = m.groups()
        if req.method == "POST":
            resource = req.json()
            name = resource["tableReference"]["tableId"]
            if name in tables:
                return _json(409, {"error": {"code": 409, "message": f"Already Exists: Table {project}:{dataset}.{name}"}})
            tables[name] = resource
            return _json(200, resource)
        if req.method == "GET":
            if table not in tables:
                return _json(404, {"error": {"code": 404, "message": f"Not found: Table {project}:{dataset}.{table}"}})
            return _json(200, tables[table])
        if req.method == "DELETE":
            tables.pop(table, None)
            return 204, {}, b""
    if m := _JOBS.match(req.path):
        project, job_id = m.groups()
        if req.method == "POST":
            if req.path.startswith("/upload"):
                message = BytesParser(policy=HTTP).parsebytes(
                    b"Content-Type: " + req.headers["content-type"].encode() + b"\r\n\r\n" + req.body)
                parts = list(message.iter_parts())
                resource = json.loads(parts[0].get_content())
                fake.state.setdefault("uploads", []).append((resource, parts[1].get_payload(decode=True)))
            else:
                resource = req.json()
            job_id = resource["jobReference"]["jobId"]
            resource["status"] = {"state": "DONE"}
            resource["statistics"] = {"query": {"numDmlAffectedRows": "0"}}
            jobs[job_id] = resource
            return _json(200, resource)
        if req.method == "GET":
            return _json(200, jobs[job_id])
    if m := _QUERIES.match(req.path):
        project, job_id = m.groups()
        return _json(200, {"kind": "bigquery#getQueryResultsResponse", "jobReference": jobs[job_id]["jobReference"],
                           "jobComplete": True, "totalRows": "0", "schema": {"fields": []}, "numDmlAffectedRows": "0"})
    return _json(404, {"error": {"code": 404, "message": f"fake BigQuery has no {req.method} {req.path}"}})


def dune_handler(fake: FakeServer, req: Request) -> tuple[int, dict, bytes]:
    """Dune's uploads API: create (409-style 'already exists' the second time) and insert. Scripted
    failures: fake.state["insert_statuses"] is a list of statuses to answer inserts with, in order."""
    tables = fake.state.setdefault("tables", set())
    if req.method == "POST" and req.path == "/api/v1/uploads":
        name = req.json()["table_name"]
        if name in tables:
            return _json(400, {"error": f"table {name} already exists"})
        tables.add(name)
        return _json(201, {"namespace": req.json()["namespace"], "table_name": name})
    m = re.fullmatch(r"/api/v1/uploads/([^/]+)/([^/]+)/insert", req.path)
    if req.method == "POST" and m:
        scripted = fake.state.setdefault("insert_statuses", [])
        status = scripted.pop(0) if scripted else 200
        if status == 429:
            return 429, {"Retry-After": "3", "Content-Type": "application/json"}, b'{"error":"rate limited"}'
        if status != 200:
            return _json(status, {"error": "bad request: column mismatch"})
        fake.state.setdefault("inserted", []).append((m.group(2), req.body))
        return _json(200, {"rows_written": req.body.count(b"\n"), "bytes_written": len(req.body)})
    return _json(404, {"error": f"fake Dune has no {req.method} {req.path}"})
