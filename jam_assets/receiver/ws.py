"""WebSocket listener (the `websockets` library): `/v1/ws`, plus `/metrics` and `/healthz` over plain HTTP.

Each message (text or binary) is one line, stored as soon as it has arrived. When no further message
follows within BURST_GAP_SECONDS (or after ACK_EVERY messages in a steady stream), the server sends
the running count, `{"stored": N, "refused": R}`: those are the first N + R messages of the connection,
written to disk; a sender that reconnects resends from message N + R + 1.

The message's end is stripped as syslog-ng strips an octet-counted frame's (trailing LFs and NULs),
so the same message gives the same line whichever way it came.
"""

from __future__ import annotations

import asyncio
import json
import time

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from .files import WriteFailed
from .framing import strip_frame_end
from .server import Connection, Receiver

WS_PATH = "/v1/ws"
BURST_GAP_SECONDS = 0.005
ACK_EVERY = 1000
# Frames websockets buffers before it stops reading: with max_size this bounds a connection's memory.
MAX_QUEUE = 4


class _WsServer:
    """The websockets server, closed like the asyncio ones, but leaving connections to the drain."""

    def __init__(self, server):
        self.server = server
        self.sockets = list(server.sockets)

    def close(self) -> None:
        self.server.close(close_connections=False)

    async def wait_closed(self) -> None:
        await self.server.wait_closed()


async def start_ws(rx: Receiver, host: str, port: int) -> _WsServer:
    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            status, body = rx.health()
            return connection.respond(status, json.dumps(body) + "\n")
        if path == "/metrics":
            return connection.respond(200, rx.metrics_text().decode())
        if path != WS_PATH:
            return connection.respond(404, f"not found: WebSocket {WS_PATH}, GET /metrics, GET /healthz\n")
        if rx.draining or len(rx.connections) >= rx.config.max_connections:
            rx.metrics.refuse("ws", "max_connections")
            return connection.respond(503, "too many connections, or shutting down; retry later\n")
        return None

    async def handler(ws: ServerConnection) -> None:
        conn = WsConnection(rx, ws)
        if not rx.admit(conn):
            await ws.close(CloseCode.TRY_AGAIN_LATER, "too many connections")
            return
        try:
            await conn.run()
        finally:
            rx.release(conn)

    server = await serve(
        handler,
        host,
        port,
        process_request=process_request,
        max_size=rx.config.max_message_bytes,
        max_queue=MAX_QUEUE,
        open_timeout=rx.config.message_seconds,
        reuse_address=True,
        backlog=1024,
    )
    return _WsServer(server)


class WsConnection(Connection):
    listener = "ws"

    def __init__(self, rx: Receiver, ws: ServerConnection):
        peer = ws.remote_address
        super().__init__(rx, f"{peer[0]}:{peer[1]}" if peer else "?")
        self.ws = ws
        self.stored = 0
        self.refused = 0
        self._closing: asyncio.Task | None = None

    async def run(self) -> None:
        ws = self.ws
        unacked = 0
        try:
            while True:
                try:
                    if unacked:
                        message = await asyncio.wait_for(ws.recv(decode=False), BURST_GAP_SECONDS)
                    else:
                        message = await ws.recv(decode=False)
                except TimeoutError:
                    await self._ack()
                    unacked = 0
                    continue
                self.last_activity = time.monotonic()
                self.rx.metrics.received_bytes["ws"] += len(message)
                body = strip_frame_end(message)
                try:
                    self.stored += self.rx.store("ws", time.time(), [], [body])
                except WriteFailed as exc:
                    await self._ack(error=str(exc))
                    await ws.close(CloseCode.INTERNAL_ERROR, "disk full" if exc.disk_full else "write error")
                    return
                unacked += 1
                if unacked >= ACK_EVERY:
                    await self._ack()
                    unacked = 0
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
                self.refused += 1
                self.rx.metrics.refuse("ws", "too_large")
        if self._closing is not None:
            await self._closing

    async def _ack(self, error: str | None = None) -> None:
        body: dict[str, int | str] = {"stored": self.stored, "refused": self.refused}
        if error:
            body["error"] = error
        await self.ws.send(json.dumps(body))

    def cut(self, reason: str | None, why: str) -> None:
        if self._closing is None:
            code = CloseCode.GOING_AWAY if self.rx.draining else CloseCode.NORMAL_CLOSURE
            self._closing = asyncio.create_task(self._close(code, why))

    async def _close(self, code: int, why: str) -> None:
        try:
            await self._ack()
            await self.ws.close(code, why[:120])
        except ConnectionClosed:
            pass
