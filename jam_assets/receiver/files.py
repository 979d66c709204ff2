"""Minute files as syslog-ng writes them: `<root>/YYYY/MM/DD/HHMM.log`, each message followed by one LF.

One writer for the whole process, called from the event loop, never from two places at once: every
append is done before the loop runs anything else, so lines of concurrent connections cannot interleave,
and a line counted in a reply has been written (to the page cache; files are fsynced when their minute
is over and on shutdown).

A line is appended whole or not at all. If the disk refuses part of a batch, the file is truncated
back to the end of the last whole line that made it, and only those lines count as stored. A crash
in the middle of a write (SIGKILL, power loss before the fsync) can still leave a partial last line;
it is cut off (truncated to the last LF) when the file is opened again, and at start-up for the
newest day folders. Cutting it, rather than terminating it, is what keeps "acknowledged means on
disk": a line is only acknowledged after its whole write returned, so a partial line never was,
and terminating it would leave a corrupt line that the pipeline would reject, glued to nothing.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("jam_assets.receiver")

# Spooled messages are copied into the minute file in pieces of this size, so memory stays bounded.
COPY_CHUNK = 1 << 20
_DAY_DIR = re.compile(r"\d{4}/\d{2}/\d{2}")


class WriteFailed(OSError):
    """The disk refused an append; the first `stored` lines of it were written whole, the rest not at all."""

    def __init__(self, stored: int, cause: OSError, path: Path):
        super().__init__(cause.errno, f"{os.strerror(cause.errno or errno.EIO)} writing {path}")
        self.stored = stored
        self.path = path

    @property
    def disk_full(self) -> bool:
        return self.errno in (errno.ENOSPC, errno.EDQUOT)


class Spool:
    """A message too big to hold in memory, accumulated in an unlinked temp file on the log disk.

    The bytes of the message body are `[start, start + length)` of the file; `write_to` copies them
    into a minute file in bounded pieces.
    """

    def __init__(self, root: Path):
        self.file = tempfile.TemporaryFile(dir=root, prefix=".spool-")
        self.size = 0
        self.start = 0
        self.length = 0

    def append(self, data: bytes | memoryview) -> None:
        self.file.write(data)
        self.size += len(data)

    def body(self, start: int, length: int) -> Spool:
        self.file.flush()
        self.start, self.length = start, length
        return self

    def write_to(self, fd: int) -> None:
        src = self.file.fileno()
        pos, end = self.start, self.start + self.length
        while pos < end:
            chunk = os.pread(src, min(COPY_CHUNK, end - pos), pos)
            if not chunk:
                raise OSError(errno.EIO, "spool file shorter than its message")
            _write_all(fd, chunk)
            pos += len(chunk)

    def close(self) -> None:
        self.file.close()


Line = bytes | Spool


def _write_all(fd: int, data: bytes | memoryview) -> int:
    view = memoryview(data)
    done = 0
    while done < len(view):
        done += os.write(fd, view[done:])
    return done


def cut_partial_line(fd: int, size: int) -> int:
    """Truncates a file that does not end in LF back to its last LF; returns the new size."""
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    end = size
    while end > 0:
        start = max(0, end - COPY_CHUNK)
        cut = os.pread(fd, end - start, start).rfind(b"\n")
        if cut >= 0:
            end = start + cut + 1
            break
        end = start
    os.ftruncate(fd, end)
    return end


@dataclass
class _Open:
    key: str
    fd: int
    size: int
    path: Path


class MinuteFiles:
    """The open minute files of one log root, keyed `YYYY/MM/DD/HHMM`."""

    def __init__(self, root: Path):
        self.root = root
        self._open: dict[str, _Open] = {}
        self._key_minute = -1
        self._key = ""
        self.current_key = ""
        self.bytes_written = 0

    def key_for(self, moment: float) -> str:
        minute = int(moment // 60)
        if minute != self._key_minute:
            self._key_minute = minute
            self._key = time.strftime("%Y/%m/%d/%H%M", time.gmtime(minute * 60))
        return self._key

    def _file(self, key: str) -> _Open:
        f = self._open.get(key)
        if f is None:
            path = self.root / f"{key}.log"
            path.parent.mkdir(parents=True, exist_ok=True)
            # O_APPEND: another process appending to the same file (a syslog-ng left running on the
            # same root) cannot be overwritten, only interleaved with whole writes.
            # Read-write: a partial last line is looked for before the first append.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            size = os.fstat(fd).st_size
            repaired = cut_partial_line(fd, size)
            if repaired != size:
                log.warning("%s ended in a partial line (a crash mid-write): cut %d bytes", path, size - repaired)
            f = self._open[key] = _Open(key, fd, repaired, path)
        if key > self.current_key:
            self.current_key = key
        return f

    def append(self, moment: float, lines: list[Line]) -> int:
        """Appends each message plus LF to the file of `moment`'s UTC minute; returns the lines written.

        Raises WriteFailed (with the number stored) if the disk refuses: the file then ends after the
        last whole line written, and the rest of `lines` was not written at all.
        """
        if not lines:
            return 0
        key = self.key_for(moment)
        try:
            f = self._file(key)
        except OSError as exc:
            raise WriteFailed(0, exc, self.root / f"{key}.log") from None
        start = f.size
        ends: list[int] = []  # file size after each line, to cut back to a line boundary on failure
        offset = start
        run: list[bytes] = []
        try:
            for line in lines:
                if isinstance(line, Spool):
                    if run:
                        offset += _write_all(f.fd, b"\n".join(run) + b"\n")
                        run.clear()
                    line.write_to(f.fd)
                    _write_all(f.fd, b"\n")
                    offset += line.length + 1
                    ends.append(offset)
                else:
                    run.append(line)
                    ends.append((ends[-1] if ends else start) + len(line) + 1)
            if run:
                offset += _write_all(f.fd, b"\n".join(run) + b"\n")
        except OSError as exc:
            stored = self._cut_back(f, start, ends)
            raise WriteFailed(stored, exc, f.path) from None
        written = offset - start
        f.size = offset
        self.bytes_written += written
        return len(lines)

    def _cut_back(self, f: _Open, start: int, ends: list[int]) -> int:
        try:
            actual = os.fstat(f.fd).st_size
        except OSError:
            actual = start
        stored = 0
        for end in ends:
            if end > actual:
                break
            stored += 1
        keep = ends[stored - 1] if stored else start
        try:
            os.ftruncate(f.fd, keep)
        except OSError as exc:  # the file stays longer than its last whole line; reopening cuts it
            log.error("could not cut %s back to its last whole line: %s", f.path, exc)
            self._close(f.key, sync=False)
        f.size = keep
        self.bytes_written += keep - start
        return stored

    def roll(self, now: float) -> None:
        """Fsyncs and closes the files of minutes before `now`'s (a late line reopens its file)."""
        current = self.key_for(now)
        for key in [k for k in self._open if k < current]:
            self._close(key)

    def _close(self, key: str, sync: bool = True) -> None:
        f = self._open.pop(key)
        try:
            if sync:
                os.fsync(f.fd)
                dir_fd = os.open(f.path.parent, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dir_fd)  # the file's directory entry, for a file created this minute
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            log.error("fsync of %s failed: %s", f.path, exc)
        finally:
            os.close(f.fd)

    def close(self) -> None:
        for key in list(self._open):
            self._close(key)

    def repair_newest(self, days: int = 2) -> None:
        """Cuts a partial last line (left by a crash) off every file of the newest `days` day folders."""
        day_dirs = sorted(
            str(p.relative_to(self.root))
            for p in self.root.glob("[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]")
            if p.is_dir() and _DAY_DIR.fullmatch(str(p.relative_to(self.root)))
        )
        for day in day_dirs[-days:]:
            for path in sorted((self.root / day).glob("[0-9][0-9][0-9][0-9].log")):
                try:
                    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
                except OSError as exc:
                    log.error("cannot check %s for a partial last line: %s", path, exc)
                    continue
                try:
                    size = os.fstat(fd).st_size
                    repaired = cut_partial_line(fd, size)
                    if repaired != size:
                        log.warning(
                            "%s ended in a partial line (a crash mid-write): cut %d bytes", path, size - repaired
                        )
                        os.fsync(fd)
                finally:
                    os.close(fd)
