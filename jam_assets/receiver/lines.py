"""Cutting a byte stream into messages with a bounded amount of memory per connection.

`LineReader` is newline framing (syslog's non-transparent framing, an HTTP body of NDJSON): a message
ends at LF (and, for syslog, at NUL, as syslog-ng's text source has it); trailing CRs are stripped, so
CRLF works. `FrameReader` is RFC 6587 octet counting. Both hold at most `spool_bytes` of a message in
memory; a longer one goes to a `Spool` on the log disk, whose first `HEAD` bytes stay in memory for
the syslog header parser. A message over `max_bytes` is refused whole: it is counted, its bytes are
read and dropped, and nothing of it reaches a minute file.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .files import Spool
from .framing import BadFrame, frame_header, strip_frame_end

# Bytes of a spooled message kept in memory: enough for any header syslog-ng would parse in practice.
HEAD = 64 * 1024
_FRAME_STARTS = frozenset(b"0123456789")


class SpooledMessage:
    """A message held in a Spool: `head` is its first bytes, `length` its size once its end is stripped."""

    def __init__(self, spool: Spool, head: bytes, length: int):
        self.spool = spool
        self.head = head
        self.length = length

    def body(self, start: int) -> Spool:
        return self.spool.body(start, self.length - start)

    def close(self) -> None:
        self.spool.close()


Message = bytes | SpooledMessage


class _Base:
    def __init__(self, root: Path, max_bytes: int, spool_bytes: int):
        self.root = root
        self.max_bytes = max_bytes
        self.spool_bytes = max(spool_bytes, HEAD)
        self.too_large = 0  # messages refused for their size; the caller takes and resets this count
        self.started: float | None = None  # when the message now in progress got its first byte
        self._spool: Spool | None = None
        self._head = b""

    @property
    def pending(self) -> bool:
        return self.started is not None

    def discard(self) -> None:
        """Drops the message in progress (connection cut, shutdown)."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        self.started = None

    def _start_spool(self, first: bytes) -> None:
        self._spool = Spool(self.root)
        self._spool.append(first)
        self._head = first[:HEAD]


class LineReader(_Base):
    def __init__(self, root: Path, max_bytes: int, spool_bytes: int, nul_ends_line: bool):
        super().__init__(root, max_bytes, spool_bytes)
        self.nul_ends_line = nul_ends_line
        self._partial = b""
        self._skipping = False  # inside a refused line, dropping bytes up to its LF
        self._trailing_cr = 0  # CRs at the end of the spooled part, stripped if the line ends there

    def feed(self, data: bytes, now: float | None = None) -> list[Message]:
        if self.nul_ends_line and b"\x00" in data:
            data = data.replace(b"\x00", b"\n")  # both end a message; neither is ever part of one
        out: list[Message] = []
        if self._skipping or self._spool is not None:
            eol = data.find(b"\n")
            if eol < 0:
                self._continue_long(data)
                return out
            self._continue_long(data[:eol])
            if self._spool is not None:
                out.append(self._finish_spool())
            self._skipping = False
            self.started = None
            data = data[eol + 1 :]
        if self._partial:
            data = self._partial + data
            self._partial = b""
        last = data.rfind(b"\n")
        if last >= 0:
            complete = data[:last]
            tail = data[last + 1 :]
            lines = complete.split(b"\n")
            if len(complete) > self.max_bytes:
                kept = [line for line in lines if len(line) <= self.max_bytes]
                self.too_large += len(lines) - len(kept)
                lines = kept
            if b"\r" in complete:
                lines = [line.rstrip(b"\r") for line in lines]
            out.extend(lines)
            self.started = None
        else:
            tail = data
        if tail:
            if self.started is None:
                self.started = time.time() if now is None else now
            if len(tail) > self.spool_bytes:
                self._start_spool(tail)
                self._trailing_cr = len(tail) - len(tail.rstrip(b"\r"))
                self._check_size()
            else:
                self._partial = tail
        return out

    def _continue_long(self, data: bytes) -> None:
        if self._skipping or not data:
            return
        assert self._spool is not None
        self._spool.append(data)
        stripped = len(data.rstrip(b"\r"))
        self._trailing_cr = self._trailing_cr + len(data) if stripped == 0 else len(data) - stripped
        self._check_size()

    def _check_size(self) -> None:
        if self._spool is not None and self._spool.size > self.max_bytes:
            self._spool.close()
            self._spool = None
            self._skipping = True
            self.too_large += 1

    def _finish_spool(self) -> SpooledMessage:
        spool, self._spool = self._spool, None
        assert spool is not None
        return SpooledMessage(spool, self._head, spool.size - self._trailing_cr)

    def finish(self) -> Message | None:
        """The unterminated last message at the end of the stream, if any (syslog-ng keeps it too)."""
        if self._spool is not None:
            self.started = None
            return self._finish_spool()
        tail, self._partial = self._partial, b""
        skipped, self._skipping = self._skipping, False
        self.started = None
        if skipped or not tail:
            return None
        return tail.rstrip(b"\r")

    def discard(self) -> None:
        super().discard()
        self._partial = b""
        self._skipping = False


class FrameReader(_Base):
    """RFC 6587 octet counting. A bad header, an oversize count or a count that was a lie ends the
    stream: `feed` returns the frames before it and sets `failure` (BadFrame or TooLarge); after it
    there is no telling where the next frame starts.

    A count is taken for a lie when the byte right after its frame has arrived and cannot start the
    next frame; that frame is refused rather than stored truncated or with the next frame's header in it.
    """

    class TooLarge(Exception):
        pass

    def __init__(self, root: Path, max_bytes: int, spool_bytes: int):
        super().__init__(root, max_bytes, spool_bytes)
        self._buf = b""
        self._left = 0  # bytes of the spooled frame still to come
        self.failure: BadFrame | FrameReader.TooLarge | None = None

    def feed(self, data: bytes, now: float | None = None) -> list[Message]:
        out: list[Message] = []
        if self.failure is not None:
            return out
        try:
            self._feed(data, out)
        except (BadFrame, FrameReader.TooLarge) as exc:
            self.failure = exc
            self.discard()
            return out
        if self._buf or self._spool is not None:
            if self.started is None:
                self.started = time.time() if now is None else now
        else:
            self.started = None
        return out

    def _feed(self, data: bytes, out: list[Message]) -> None:
        buf = self._buf + data if self._buf else data
        self._buf = b""
        pos = 0
        end = len(buf)
        if self._spool is not None:
            take = min(self._left, end)
            self._spool.append(buf[:take])
            self._left -= take
            pos = take
            if self._left:
                return
            self._check_next(buf, pos)
            out.append(self._finish_spool())
        while pos < end:
            header = frame_header(buf, pos)
            if header is None:
                break
            length, body = header
            if length > self.max_bytes:
                self.too_large += 1
                raise FrameReader.TooLarge(f"frame of {length} bytes is over the {self.max_bytes}-byte limit")
            if end - body >= length:
                frame_end = body + length
                self._check_next(buf, frame_end)
                out.append(strip_frame_end(buf[body:frame_end]))
                pos = frame_end
                continue
            if length > self.spool_bytes:
                self._start_spool(buf[body:])
                self._left = length - (end - body)
                pos = end
            break
        if pos < end:
            self._buf = buf[pos:]

    @staticmethod
    def _check_next(buf: bytes, pos: int) -> None:
        if pos < len(buf) and buf[pos] not in _FRAME_STARTS:
            raise BadFrame(f"octet count does not match its frame: {bytes(buf[pos : pos + 16])!r} follows it")

    def _finish_spool(self) -> SpooledMessage:
        spool, self._spool = self._spool, None
        assert spool is not None
        spool.file.flush()
        # The parser strips trailing LFs and NULs; they are few, so the tail is read back to count them.
        tail_len = min(spool.size, 4096)
        tail = os.pread(spool.file.fileno(), tail_len, spool.size - tail_len)
        stripped = len(tail) - len(tail.rstrip(b"\n\x00"))
        self.started = None
        return SpooledMessage(spool, self._head, spool.size - stripped)

    def discard(self) -> None:
        super().discard()
        self._buf = b""
        self._left = 0
