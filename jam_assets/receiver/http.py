"""HTTP listener (h11 over asyncio streams): `POST /v1/telemetry`, `GET /metrics`, `GET /healthz`.

A telemetry body is newline-delimited JSON, read as a stream: each line is stored as soon as its LF
has arrived, so a 1 GB body needs no more memory than one line (and lines over JAM_RECEIVER_SPOOL_BYTES
wait on disk). The reply says how many lines were stored and how many refused; lines are handled in
order, so after an error reply the sender resends from line `stored + refused + 1`.
"""

from __future__ import annotations

import asyncio
import json
import time

import h11

from .files import WriteFailed
from .lines import LineReader
from .server import ADMIN_RESERVE, Connection, Receiver

READ_CHUNK = 256 * 1024
MAX_HEAD_BYTES = 16 * 1024
TELEMETRY_PATH = b"/v1/telemetry"


async def start_http(rx: Receiver, host: str, port: int) -> asyncio.Server:
    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await HttpConnection(rx, reader, writer).run()

    return await asyncio.start_server(accept, host, port, reuse_address=True, backlog=1024, limit=READ_CHUNK)


class HttpConnection(Connection):
    listener = "http"

    def __init__(self, rx: Receiver, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        peer = writer.get_extra_info("peername")
        super().__init__(rx, f"{peer[0]}:{peer[1]}" if peer else "?")
        self.reader = reader
        self.writer = writer
        self.h = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.lines: LineReader | None = None
        self.head_started: float | None = None  # first byte of a request head not yet complete
        self.in_request = False
        self.stored = 0
        self.refused = 0
        self._task: asyncio.Task | None = None
        self._cut: tuple[str | None, str] | None = None

    def message_started(self) -> float | None:
        if self.head_started is not None:
            return self.head_started
        return self.lines.started if self.lines is not None else None

    def quiet(self, now_mono: float) -> bool:
        return not self.in_request and super().quiet(now_mono)

    def cut(self, reason: str | None, why: str) -> None:
        if self._cut is None and self._task is not None:
            self._cut = (reason, why)
            self._task.cancel()

    async def run(self) -> None:
        self._task = asyncio.current_task()
        # Counted against the limit like any connection; one of the few past it may only look.
        self.admin_only = len(self.rx.connections) >= self.rx.config.max_connections
        if not self.rx.admit(self, reserve=ADMIN_RESERVE):
            await self._reply_and_close(503, {"error": "too many connections, or shutting down; retry later"})
            return
        try:
            while not self.rx.draining or self.in_request:
                event = await self._next_event()
                if isinstance(event, h11.Request):
                    await self._handle(event)
                elif isinstance(event, h11.ConnectionClosed) or event is None:
                    break
                if self.h.our_state is h11.MUST_CLOSE or self.h.their_state is h11.MUST_CLOSE:
                    break
                if self.h.our_state is h11.DONE and self.h.their_state is h11.DONE:
                    self.h.start_next_cycle()
        except asyncio.CancelledError:
            if self._cut is None:
                raise
            await self._after_cut(*self._cut)
        except h11.RemoteProtocolError as exc:
            await self._reply_and_close(exc.error_status_hint, {"error": f"bad request: {exc}"})
        except (ConnectionError, OSError):
            pass
        finally:
            self.writer.close()
            self.rx.release(self)

    async def _read(self) -> bytes:
        data = await self.reader.read(READ_CHUNK)
        self.last_activity = time.monotonic()
        self.rx.metrics.received_bytes["http"] += len(data)
        return data

    async def _next_event(self):
        while True:
            event = self.h.next_event()
            if event is not h11.NEED_DATA:
                if isinstance(event, h11.Request):
                    self.head_started = None
                return event
            data = await self._read()
            if not data and self.h.their_state is h11.SEND_BODY:
                self.rx.metrics.refuse("http", "incomplete", 1 if self.lines and self.lines.pending else 0)
                if self.lines is not None:
                    self.lines.discard()
                return None  # the sender went away mid-body; what was whole is stored, it got no reply
            if data and self.h.their_state is h11.IDLE and self.head_started is None:
                self.head_started = time.time()
            self.h.receive_data(data)

    async def _handle(self, request: h11.Request) -> None:
        self.in_request = True
        path = request.target.split(b"?", 1)[0]
        try:
            if path == TELEMETRY_PATH:
                if self.admin_only or self.rx.draining:
                    self.rx.metrics.refuse("http", "max_connections")
                    await self._reply_and_close(503, {"error": "too many connections, or shutting down; retry later"})
                elif request.method != b"POST":
                    await self._skip_body()
                    await self._reply(405, {"error": "POST newline-delimited JSON to /v1/telemetry"})
                else:
                    await self._telemetry()
            elif path in (b"/metrics", b"/healthz") and request.method == b"GET":
                await self._skip_body()
                if path == b"/metrics":
                    await self._send(200, self.rx.metrics_text(), "text/plain; version=0.0.4; charset=utf-8")
                else:
                    status, body = self.rx.health()
                    await self._reply(status, body)
            else:
                await self._skip_body()
                await self._reply(404, {"error": "not found: POST /v1/telemetry, GET /metrics, GET /healthz"})
        finally:
            self.in_request = False

    async def _skip_body(self) -> None:
        while self.h.their_state is h11.SEND_BODY:
            event = await self._next_event()
            if event is None or isinstance(event, h11.EndOfMessage):
                return

    async def _telemetry(self) -> None:
        cfg = self.rx.config
        self.stored = self.refused = 0
        self.lines = LineReader(cfg.log_dir, cfg.max_message_bytes, cfg.spool_bytes, nul_ends_line=False)
        if self.h.they_are_waiting_for_100_continue:
            self.writer.write(self.h.send(h11.InformationalResponse(status_code=100, headers=[])))
        try:
            while True:
                event = await self._next_event()
                if event is None:
                    return
                if isinstance(event, h11.Data):
                    now = time.time()
                    try:
                        messages = self.lines.feed(bytes(event.data), now)
                    except OSError as exc:  # spooling a long line to the log disk failed
                        failed = WriteFailed(0, exc, cfg.log_dir)
                        self.rx.metrics.refuse("http", "disk_full" if failed.disk_full else "write_error")
                        raise failed from None
                    self._store(messages, now)
                elif isinstance(event, h11.EndOfMessage):
                    last = self.lines.finish()
                    self._store([last] if last is not None else [], time.time())
                    await self._reply(200, self._counts())
                    return
        except WriteFailed as exc:
            status = 507 if exc.disk_full else 500
            await self._reply_and_close(status, {**self._counts(), "error": str(exc)})
        finally:
            if self.lines.pending:  # a line cut by a timeout or the shutdown is not stored
                self.rx.metrics.refuse("http", self._cut[0] or "incomplete" if self._cut else "incomplete")
            self.lines.discard()
            self.lines = None

    def _store(self, messages: list, now: float) -> None:
        lines = self.lines
        if lines is not None and lines.too_large:
            self.refused += lines.too_large
            self.rx.metrics.refuse("http", "too_large", lines.too_large)
            lines.too_large = 0
        if not messages:
            return
        bodies = [m if isinstance(m, bytes) else m.body(0) for m in messages]
        try:
            self.stored += self.rx.store("http", now, messages, bodies)
        except WriteFailed as exc:
            self.stored += exc.stored
            raise

    def _counts(self) -> dict:
        return {"stored": self.stored, "refused": self.refused}

    async def _after_cut(self, reason: str | None, why: str) -> None:
        if self.h.our_state is h11.SEND_RESPONSE:  # a request came and has had no answer yet
            status = 408 if reason == "timeout" else 503
            await self._reply_and_close(status, {**self._counts(), "error": why})

    async def _reply(self, status: int, body: dict) -> None:
        await self._send(status, json.dumps(body).encode() + b"\n", "application/json")

    async def _reply_and_close(self, status: int, body: dict) -> None:
        try:
            await self._send(status, json.dumps(body).encode() + b"\n", "application/json", close=True)
        except (h11.LocalProtocolError, ConnectionError, OSError):
            pass

    async def _send(self, status: int, body: bytes, content_type: str, close: bool = False) -> None:
        headers = [("content-type", content_type), ("content-length", str(len(body)))]
        if close or self.rx.draining:
            headers.append(("connection", "close"))
        self.writer.write(self.h.send(h11.Response(status_code=status, headers=headers)))
        self.writer.write(self.h.send(h11.Data(data=body)))
        self.writer.write(self.h.send(h11.EndOfMessage()))
        await asyncio.wait_for(self.writer.drain(), timeout=self.rx.config.message_seconds)
