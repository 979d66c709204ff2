"""The receiver process: one asyncio loop, up to three listeners, one minute-file writer.

Every listener turns its input into messages and hands them, a batch at a time, to `Receiver.store`,
which appends them synchronously: nothing else runs on the loop until the batch is written, so
lines never interleave and a count sent to a client only covers written lines. A ticker rolls the
minute files over (fsync, close) and cuts off idle connections and slow senders.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import signal
import sys
import time

from . import framing
from .config import ConfigError, ReceiverConfig, from_env
from .files import MinuteFiles, WriteFailed
from .lines import FrameReader, LineReader, Message, SpooledMessage
from .metrics import Metrics

log = logging.getLogger("jam_assets.receiver")

TICK_SECONDS = 0.5
# HTTP connections past JAM_RECEIVER_MAX_CONNECTIONS still get /metrics and /healthz: a full receiver
# is when an operator most needs to look at it.
ADMIN_RESERVE = 8
# On SIGTERM a connection counts as drained once nothing has arrived on it for this long.
DRAIN_QUIET_SECONDS = 0.2


def _free_bytes(path) -> int:
    """Space the receiver may still use on the log disk; -1 if the folder cannot be looked at."""
    try:
        st = os.statvfs(path)
    except OSError:
        return -1
    return st.f_bavail * st.f_frsize


class Connection(abc.ABC):
    """What the ticker and the shutdown need from every open connection, whatever its listener."""

    listener = ""

    def __init__(self, rx: Receiver, peer: str):
        self.rx = rx
        self.peer = peer
        self.last_activity = time.monotonic()
        self.closed = False

    def message_started(self) -> float | None:
        """Wall-clock time at which the message in progress began, if one is."""
        return None

    def check(self, now_wall: float, now_mono: float) -> None:
        started = self.message_started()
        if started is not None and now_wall - started > self.rx.config.message_seconds:
            self.cut("timeout", f"a message took over {self.rx.config.message_seconds:g} s to arrive (slow sender)")
        elif now_mono - self.last_activity > self.rx.config.idle_seconds:
            self.cut(None, f"idle for {self.rx.config.idle_seconds:g} s")

    def quiet(self, now_mono: float) -> bool:
        return self.message_started() is None and now_mono - self.last_activity > DRAIN_QUIET_SECONDS

    @abc.abstractmethod
    def cut(self, reason: str | None, why: str) -> None:
        """Closes the connection; `reason` (a metrics label) counts it as refused, `why` is logged."""


class Receiver:
    def __init__(self, config: ReceiverConfig):
        self.config = config
        self.files = MinuteFiles(config.log_dir)
        self.metrics = Metrics()
        self.connections: set[Connection] = set()
        self.draining = False
        self.ports: dict[str, int] = {}
        self._servers: list = []
        self._stop = asyncio.Event()
        self._lock_fd: int | None = None
        # The last write the disk refused, and the bytes it needed: unhealthy until they would fit.
        self._write_failure: tuple[str, int] | None = None

    # -- admission and storage, used by every listener -------------------------------------------

    def admit(self, conn: Connection, reserve: int = 0) -> bool:
        if self.draining or len(self.connections) >= self.config.max_connections + reserve:
            self.metrics.refuse(conn.listener, "max_connections")
            log.warning(
                "%s connection from %s refused: %s",
                conn.listener,
                conn.peer,
                "shutting down" if self.draining else f"{self.config.max_connections} connections open",
            )
            return False
        self.connections.add(conn)
        self.metrics.connections[conn.listener] += 1
        self.metrics.open_connections[conn.listener] += 1
        return True

    def release(self, conn: Connection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            self.metrics.open_connections[conn.listener] -= 1

    def store(self, listener: str, moment: float, messages: list[bytes | SpooledMessage], bodies: list) -> int:
        """Appends `bodies` (the lines of `messages`, same order) to the minute file of `moment`.

        Returns the number stored; raises WriteFailed with `.stored` set if the disk refused some.
        Spools are closed either way.
        """
        failed: WriteFailed | None = None
        try:
            stored = self.files.append(moment, bodies)
        except WriteFailed as exc:
            self._count_stored(listener, bodies[: exc.stored])
            self.metrics.refuse(listener, "disk_full" if exc.disk_full else "write_error", len(bodies) - exc.stored)
            failed = exc
            raise
        finally:
            for m in messages:
                if isinstance(m, SpooledMessage):
                    m.close()
            if failed is not None:
                # Healthy again once the refused lines, sent again, would fit: a spooled body needs its
                # spool on the log disk as well as its place in the minute file (the spool of the
                # refused message is gone now, which alone must not turn the receiver healthy).
                refused = bodies[failed.stored :]
                needed = sum(len(b) + 1 if isinstance(b, bytes) else 2 * b.length + 1 for b in refused)
                self._write_failure = (str(failed), needed)
        self._count_stored(listener, bodies)
        self._write_failure = None
        return stored

    def _count_stored(self, listener: str, bodies: list) -> None:
        n = len(bodies)
        self.metrics.stored_lines[listener] += n
        self.metrics.messages[listener] += n
        self.metrics.stored_bytes[listener] += n + sum(b.length if not isinstance(b, bytes) else len(b) for b in bodies)

    def health(self) -> tuple[int, dict]:
        if self.draining:
            return 503, {"status": "draining"}
        free = _free_bytes(self.config.log_dir)
        if free < 0:
            return 503, {"status": "log dir unusable", "log_dir": str(self.config.log_dir)}
        if free == 0 or (self._write_failure is not None and free < self._write_failure[1]):
            error = self._write_failure[0] if self._write_failure else "no space left"
            return 503, {"status": "disk full", "error": error, "log_dir": str(self.config.log_dir)}
        return 200, {"status": "ok", "current_file": self.files.current_key or None}

    def metrics_text(self) -> bytes:
        return self.metrics.render(self.config.log_dir, self.files.current_key)

    # -- life cycle ------------------------------------------------------------------------------

    def _take_root(self) -> None:
        root = self.config.log_dir
        try:
            root.mkdir(parents=True, exist_ok=True)
            fd = os.open(root / ".receiver.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError(f"JAM_LOG_DIR={root}: cannot write there ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(f"JAM_LOG_DIR={root}: another receiver (pid {other}) is writing there") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    async def start(self) -> None:
        from .http import start_http
        from .ws import start_ws

        self._take_root()
        self.files.repair_newest()
        cfg = self.config
        loop = asyncio.get_running_loop()
        try:
            if cfg.syslog_port is not None:
                server = await loop.create_server(
                    lambda: SyslogProtocol(self), cfg.host, cfg.syslog_port, reuse_address=True, backlog=1024
                )
                self._servers.append(server)
                self.ports["syslog"] = server.sockets[0].getsockname()[1]
            if cfg.http_port is not None:
                server = await start_http(self, cfg.host, cfg.http_port)
                self._servers.append(server)
                self.ports["http"] = server.sockets[0].getsockname()[1]
            if cfg.ws_port is not None:
                server = await start_ws(self, cfg.host, cfg.ws_port)
                self._servers.append(server)
                self.ports["ws"] = next(iter(server.sockets)).getsockname()[1]
        except OSError as exc:
            raise ConfigError(f"cannot listen on {cfg.host}: {exc.strerror}") from None
        log.info(
            "receiving into %s: %s", cfg.log_dir, ", ".join(f"{k} on {cfg.host}:{v}" for k, v in self.ports.items())
        )
        if cfg.ready_file is not None:
            tmp = cfg.ready_file.with_name(cfg.ready_file.name + ".tmp")
            tmp.write_text(json.dumps({"pid": os.getpid(), **self.ports}))
            tmp.replace(cfg.ready_file)

    async def run(self) -> None:
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        ticker = asyncio.create_task(self._tick())
        try:
            await self._stop.wait()
            log.info("stopping: draining %d connection(s)", len(self.connections))
            await self.drain()
        finally:
            ticker.cancel()
            self.files.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
            log.info("stopped; minute files fsynced and closed")

    def stop(self) -> None:
        self._stop.set()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            self.files.roll(time.time())
            now_wall, now_mono = time.time(), time.monotonic()
            for conn in list(self.connections):
                conn.check(now_wall, now_mono)

    async def drain(self) -> None:
        """Stops accepting, lets open connections finish for up to drain_seconds, then closes the rest."""
        self.draining = True
        for server in self._servers:
            server.close()
        deadline = time.monotonic() + self.config.drain_seconds
        while self.connections and time.monotonic() < deadline:
            now = time.monotonic()
            for conn in list(self.connections):
                if conn.quiet(now):
                    conn.cut(None, "receiver shutting down")
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.cut("shutdown", "receiver shutting down (drain time over)")
        # Give the cut connections' tasks a moment to send their last words (HTTP replies, WS counts).
        for _ in range(20):
            if not self.connections:
                break
            await asyncio.sleep(0.05)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1)


class SyslogProtocol(asyncio.Protocol, Connection):
    """One syslog TCP connection. Its framing is decided from its first bytes (RFC 6587 octet counting
    if they are `DIGITS SP`, else newline framing) and kept for the connection, as syslog-ng's
    `syslog()` and `tcp()` sources each keep theirs."""

    listener = "syslog"

    def __init__(self, rx: Receiver):
        Connection.__init__(self, rx, "?")
        self.transport: asyncio.Transport | None = None
        self.reader: LineReader | FrameReader | None = None
        self._head = b""
        self._program = rx.config.program

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # a TCP server's transports always are
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        if not self.rx.admit(self):
            self.closed = True
            transport.abort()

    def message_started(self) -> float | None:
        if self.reader is None:
            return time.time() if self._head else None
        return self.reader.started

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        now = time.time()
        self.last_activity = time.monotonic()
        cfg = self.rx.config
        self.rx.metrics.received_bytes["syslog"] += len(data)
        if self.reader is None:
            self._head += data
            octet = framing.looks_octet_counted(self._head[: framing.FRAME_DIGITS + 1])
            if octet is None:
                return
            if octet:
                self.reader = FrameReader(cfg.log_dir, cfg.max_message_bytes, cfg.spool_bytes)
            else:
                self.reader = LineReader(cfg.log_dir, cfg.max_message_bytes, cfg.spool_bytes, nul_ends_line=True)
            data, self._head = self._head, b""
        try:
            messages = self.reader.feed(data, now)
        except OSError as exc:  # spooling a long message to the log disk failed
            self._spool_failed(exc)
            return
        self._refuse_too_large()
        if messages:
            self._store(messages, now)
        failure = getattr(self.reader, "failure", None)
        if failure is not None and not self.closed:
            if isinstance(failure, framing.BadFrame):
                self.rx.metrics.refuse("syslog", "bad_frame")
            self.cut(None, str(failure))

    def _refuse_too_large(self) -> None:
        reader = self.reader
        if reader is not None and reader.too_large:
            self.rx.metrics.refuse("syslog", "too_large", reader.too_large)
            log.warning(
                "syslog %s: %d message(s) over %d bytes refused",
                self.peer,
                reader.too_large,
                self.rx.config.max_message_bytes,
            )
            reader.too_large = 0

    def _store(self, messages: list[Message], now: float) -> None:
        program = self._program
        bodies: list = []
        dropped = 0
        for m in messages:
            if isinstance(m, bytes):
                name, start = framing.parse(m)
                if name is not None and name.startswith(program):
                    bodies.append(m[start:] if start else m)
                else:
                    dropped += 1
            else:
                name, start = framing.parse(m.head[: m.length])
                if name is not None and name.startswith(program) and start <= len(m.head):
                    bodies.append(m.body(start))
                else:
                    dropped += 1
        self.rx.metrics.refuse("syslog", "program", dropped)
        try:
            self.rx.store("syslog", now, messages, bodies)
        except WriteFailed as exc:
            log.error(
                "syslog %s: %s; %d message(s) refused, connection closed", self.peer, exc, len(bodies) - exc.stored
            )
            self.cut(None, "disk refused the write")

    def _spool_failed(self, exc: OSError) -> None:
        reason = "disk_full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "write_error"
        self.rx.metrics.refuse("syslog", reason)
        log.error("syslog %s: spooling a long message failed (%s); connection closed", self.peer, exc.strerror)
        self.cut(None, "spool failed")

    def eof_received(self) -> bool:
        # A clean end of stream ends an unterminated last line, as in syslog-ng; a partial
        # octet-counted frame is incomplete and dropped.
        reader = self.reader
        if reader is None and self._head:
            reader = self.reader = LineReader(
                self.rx.config.log_dir, self.rx.config.max_message_bytes, self.rx.config.spool_bytes, nul_ends_line=True
            )
            messages = reader.feed(self._head)
            if messages:
                self._store(messages, time.time())
        if isinstance(reader, LineReader) and not self.closed:
            last = reader.finish()
            if last is not None:
                self._store([last], time.time())
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.reader is not None and self.reader.pending:
            self.rx.metrics.refuse("syslog", "incomplete")
            self.reader.discard()
        self.closed = True
        self.rx.release(self)

    def cut(self, reason: str | None, why: str) -> None:
        if self.reader is not None and self.reader.pending:
            self.rx.metrics.refuse("syslog", reason or "incomplete")
            self.reader.discard()
        if reason == "timeout":
            log.warning("syslog %s: %s; connection closed", self.peer, why)
        else:
            log.info("syslog %s: connection closed: %s", self.peer, why)
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self.rx.release(self)


def _setup_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("JAM_RECEIVER_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # websockets logs every connection at INFO; the receiver logs what matters itself.
    logging.getLogger("websockets").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """`python -m jam_assets.receiver` / `jam-etl receive`: runs until SIGTERM or Ctrl-C."""
    _setup_logging()
    try:
        config = from_env()
        asyncio.run(Receiver(config).run())
    except ConfigError as exc:
        print(f"jam receiver: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
