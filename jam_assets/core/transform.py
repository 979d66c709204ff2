"""A minute file -> rows of every table, `rejected_lines`, and a summary of what was seen.

The file is read once, as a stream of 8 MB chunks: each line's rows are serialised and handed to
a sink as soon as they are made, so memory holds two chunks and one line's rows, never the file.
Every line ends up either in at least one table or in `rejected_lines` (FORMAT.md 4.3); one bad
line never stops the file.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any, NamedTuple, Protocol, cast

import orjson

from . import schema
from .envelope import (
    DEFAULT_TEAM_ALIASES,
    INT64_MAX,
    INT64_MIN,
    JAM_EPOCH,
    SLOT_SECONDS,
    UNKNOWN_TEAM,
    LineRejected,
    TimeParser,
    parse_metadata,
    preview,
)
from .minute_files import minute_start_column
from .payloads import HANDLERS, Row, Rows, Serialized

BOM = b"\xef\xbb\xbf"
SAMPLE_LIMIT = 5
_DUMPS_OPTS = orjson.OPT_APPEND_NEWLINE
# orjson reads integers up to 2**64 - 1, but every integer column is a signed 64-bit INTEGER.
# Serialising with OPT_STRICT_INTEGER (53-bit limit) costs nothing and raises on the rare big
# value; only then is the row's range checked exactly.
_STRICT_DUMPS_OPTS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_STRICT_INTEGER


class RowSink(Protocol):
    def write(self, table: str, data: bytes) -> None:
        """Take serialised rows (JSON objects, each ending in a newline) for `table`."""


@dataclass
class MinuteFileSummary:
    """What one pass over a minute file saw: raw_log's metadata and the inputs of the checks that need
    the raw envelope (metadata `h`, `codec_len`), which no table keeps."""

    minute_file: str
    path: str = ""
    bytes: int = 0
    lines: int = 0
    lines_with_rows: int = 0
    rejected: int = 0
    sha256: str = ""
    first_time: str | None = None
    last_time: str | None = None
    lines_by_msg_type: Counter = field(default_factory=Counter)
    rows_by_table: Counter = field(default_factory=Counter)
    rejected_by_reason: Counter = field(default_factory=Counter)
    preimage_hash_mismatches: int = 0
    preimage_hash_samples: list[dict] = field(default_factory=list)
    codec_len_mismatches: int = 0
    codec_len_samples: list[dict] = field(default_factory=list)

    def merge(self, later: MinuteFileSummary) -> None:
        """Add the summary of the next piece of the same file (its lines follow this one's)."""
        for name in (
            "bytes",
            "lines",
            "lines_with_rows",
            "rejected",
            "preimage_hash_mismatches",
            "codec_len_mismatches",
        ):
            setattr(self, name, getattr(self, name) + getattr(later, name))
        for name in ("lines_by_msg_type", "rows_by_table", "rejected_by_reason"):
            getattr(self, name).update(getattr(later, name))
        for name in ("preimage_hash_samples", "codec_len_samples"):
            getattr(self, name).extend(getattr(later, name)[: SAMPLE_LIMIT - len(getattr(self, name))])
        times = [t for t in (self.first_time, self.last_time, later.first_time, later.last_time) if t is not None]
        self.first_time, self.last_time = (min(times), max(times)) if times else (None, None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "minute_file": self.minute_file,
            "bytes": self.bytes,
            "lines": self.lines,
            "lines_with_rows": self.lines_with_rows,
            "rejected": self.rejected,
            "sha256": self.sha256,
            "first_time": self.first_time,
            "last_time": self.last_time,
            "lines_by_msg_type": dict(sorted(self.lines_by_msg_type.items())),
            "rows_by_table": {t: self.rows_by_table.get(t, 0) for t in schema.ALL_TABLES},
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            "preimage_hash_mismatches": self.preimage_hash_mismatches,
            "preimage_hash_samples": self.preimage_hash_samples,
            "codec_len_mismatches": self.codec_len_mismatches,
            "codec_len_samples": self.codec_len_samples,
        }


_PY_TYPES = {"STRING": str, "TIMESTAMP": str, "INTEGER": int}
_SOURCE = re.compile(r"`([^`]+)`")


class _TableTypes:
    """Checks a row's value types against its schema.

    Valid rows of a table come in few type patterns (which nullable columns are null), so a
    pattern that passed once is remembered and later rows cost one tuple comparison.
    """

    def __init__(self, table: str):
        self.table = table
        self.columns = schema.columns(table)
        self.names = tuple(c.name for c in self.columns)
        self.valid: set[tuple[type, ...]] = set()

    def check(self, row: Row) -> None:
        pattern = tuple(map(type, row.values()))
        if pattern in self.valid:
            return
        if tuple(row) != self.names:
            raise AssertionError(f"{self.table} row keys {tuple(row)} do not follow schema/{self.table}.json")
        for column, value in zip(self.columns, row.values()):
            source = _SOURCE.search(column.description)
            where = f"{column.name} ({source.group(1)})" if source else column.name
            if value is None:
                if column.required:
                    raise LineRejected("missing_field", f"{where} is missing")
            elif type(value) is not _PY_TYPES[column.type]:
                expected = "an integer" if column.type == "INTEGER" else "a string"
                raise LineRejected("bad_value", f"{where} must be {expected}, got {preview(value)}")
        if len(self.valid) < 256:
            self.valid.add(pattern)


def _check_int_range(table: str, row: Row) -> None:
    for name, value in row.items():
        if type(value) is int and not INT64_MIN <= value <= INT64_MAX:
            raise LineRejected("bad_value", f"{table}.{name} = {value} does not fit a 64-bit INTEGER")


def serialise(rows: Rows, types: dict[str, _TableTypes]) -> list[tuple[str, bytes, int]]:
    """Check every row of a line against its schema and serialise it; all or nothing for the line."""
    out = []
    dumps = orjson.dumps
    for table, row in rows:
        if isinstance(row, Serialized):
            out.append((table, row.data, row.count))
            continue
        types[table].check(row)
        try:
            data = dumps(row, option=_STRICT_DUMPS_OPTS)
        except orjson.JSONEncodeError:
            _check_int_range(table, row)
            data = dumps(row, option=_DUMPS_OPTS)
        out.append((table, data, 1))
    return out


class LineTransformer:
    """Turns one line's bytes into rows. Keeps per-file caches (minute prefixes, metadata strings)."""

    def __init__(self, minute_file: str, team_aliases: Mapping[str, str] | None = None):
        self.minute_file = minute_file
        self.minute_start = minute_start_column(minute_file)
        self.team_aliases = dict(DEFAULT_TEAM_ALIASES if team_aliases is None else team_aliases)
        self.times = TimeParser()
        self.types = {t: _TableTypes(t) for t in schema.TABLES}
        self._metadata: dict[str, tuple[dict[str, str], str, str | None, int | None]] = {}
        self._read_msg_type: str | None = None  # the line's, as soon as it is read: for a rejection

    def _envelope_metadata(self, text: Any) -> tuple[dict[str, str], str, str | None, int | None]:
        if text is None:
            return {}, UNKNOWN_TEAM, None, None
        if type(text) is not str:
            raise LineRejected("bad_value", f"metadata must be a string, got {preview(text)}")
        cached = self._metadata.get(text)
        if cached is None:
            md = parse_metadata(text)
            team = md.get("team") or UNKNOWN_TEAM
            codec_len = md.get("codec_len")
            if codec_len is not None:
                codec_len = int(codec_len) if codec_len.isdigit() and codec_len.isascii() else -1
            cached = (md, self.team_aliases.get(team, team), md.get("id"), codec_len)
            if len(self._metadata) > 65536:
                self._metadata.clear()
            self._metadata[text] = cached
        return cached

    def _msg_type(self, msg_type: Any) -> str:
        """The msg_type as HANDLERS keys it (a JSON number or zero-padded digits are accepted), or a rejection."""
        if msg_type is None:
            raise LineRejected("missing_field", "msg_type is missing")
        if type(msg_type) is int:
            msg_type = str(msg_type)
        elif type(msg_type) is not str or not msg_type.isdigit():
            raise LineRejected("bad_value", f"msg_type must be a string of digits, got {preview(msg_type)}")
        elif msg_type[0] == "0" and len(msg_type) > 1:
            msg_type = str(int(msg_type))
        if msg_type not in HANDLERS:
            raise LineRejected(
                "unknown_msg_type",
                f"msg_type {msg_type} is not one of {', '.join(sorted(HANDLERS, key=int))}",
                msg_type,
            )
        return msg_type

    def rows(self, line_no: int, text: bytes | memoryview) -> LineRows:
        """One line's rows and the envelope facts the checks need; raises LineRejected (with the
        line's msg_type when it was read)."""
        try:
            return self._rows(line_no, text)
        except LineRejected as rejected:
            rejected.msg_type = rejected.msg_type or self._read_msg_type
            raise

    def _rows(self, line_no: int, text: bytes | memoryview) -> LineRows:
        self._read_msg_type = None
        try:
            envelope = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            try:
                bytes(text).decode("utf-8")
            except UnicodeDecodeError as bad:
                raise LineRejected("invalid_utf8", f"byte {bad.start} is not UTF-8") from None
            raise LineRejected("invalid_json", str(exc)) from None
        if type(envelope) is not dict:
            raise LineRejected("not_an_object", f"the line is a JSON {type(envelope).__name__}, not an object")
        # One C-level pass for the envelope's fields; the checks below run in FORMAT.md's order.
        msg_type, raw_time, metadata, sender_id, elapsed, codec, payload = map(envelope.get, _ENVELOPE)

        # The usual msg_type is a key of HANDLERS as it stands; anything else is normalised or rejected.
        handler = HANDLERS.get(msg_type) if type(msg_type) is str else None
        if handler is None:
            msg_type = self._msg_type(msg_type)
            handler = HANDLERS[msg_type]
        self._read_msg_type = msg_type

        if type(raw_time) is not str:
            if raw_time is None:
                raise LineRejected("missing_field", "time is missing")
            raise LineRejected("bad_value", f"time must be a string, got {preview(raw_time)}")
        time, seconds = self.times.parse(raw_time)

        cached = self._metadata.get(metadata) if type(metadata) is str else None
        md, team, md_id, codec_len = cached or self._envelope_metadata(metadata)
        if sender_id is None:
            sender_id = md_id
        elif type(sender_id) is not str:
            raise LineRejected("bad_value", f"sender_id must be a string, got {preview(sender_id)}")
        if elapsed is not None and (type(elapsed) is not int or not 0 <= elapsed <= INT64_MAX):
            raise LineRejected(
                "bad_value", f"elapsed must be a whole, non-negative number of microseconds, got {preview(elapsed)}"
            )
        if codec is not None and type(codec) is not str:
            raise LineRejected("bad_value", f"codec_encoded must be a hex string, got {preview(codec)}")
        if payload is None and "json_encoded" not in envelope:
            raise LineRejected("missing_field", "json_encoded is missing")

        common = {
            "minute_file": self.minute_file,
            "minute_start": self.minute_start,
            "line_no": line_no,
            "time": time,
            "slot": (seconds - JAM_EPOCH) // SLOT_SECONDS,
            "team": team,
            "sender_id": sender_id,
            "elapsed": elapsed,
        }
        rows = handler(common, payload, md, codec)
        if not rows:
            raise LineRejected("empty_payload", f"msg_type {msg_type} payload gave no rows (all record lists empty)")
        preimage_hash = None
        if msg_type == "142":
            preimage = rows[0][1]
            preimage_hash = preimage["preimage_hash"] if isinstance(preimage, dict) else None
        kind = cast(str, msg_type)  # a key of HANDLERS by now
        return LineRows(kind, time, serialise(rows, self.types), md, codec, codec_len, preimage_hash)


class LineRows(NamedTuple):
    """What one line gave: its rows per table, and the envelope facts only the raw line holds."""

    msg_type: str
    time: str
    tables: list[tuple[str, bytes, int]]  # (table, serialised rows, how many)
    metadata: Mapping[str, str]
    codec: str | None  # envelope codec_encoded
    codec_len: int | None  # metadata codec_len as a number (-1 when it is not one)
    preimage_hash: str | None  # msg_type 142: BLAKE2b-256 of the blob


_ENVELOPE = ("msg_type", "time", "metadata", "sender_id", "elapsed", "codec_encoded", "json_encoded")


def rejected_row(
    minute_file: str, minute_start: str, line_no: int, reason: str, detail: str, msg_type: str | None, raw: bytes
) -> Row:
    try:
        text, encoded = raw.decode("utf-8"), None
    except UnicodeDecodeError:
        text, encoded = None, base64.b64encode(raw).decode("ascii")
    return {
        "minute_file": minute_file,
        "minute_start": minute_start,
        "line_no": line_no,
        "reason": reason,
        "detail": detail,
        "msg_type": msg_type,
        "raw": text,
        "raw_base64": encoded,
    }


def recover_raw(row: Mapping[str, Any]) -> bytes:
    """The exact bytes of a rejected line (without its newline)."""
    if row.get("raw_base64") is not None:
        return base64.b64decode(row["raw_base64"])
    return row["raw"].encode("utf-8")


def _sample(samples: list[dict], item: dict) -> None:
    if len(samples) < SAMPLE_LIMIT:
        samples.append(item)


_CHUNK = 8 << 20


def _lines(
    stream: IO[bytes], limit: int | None, summary: MinuteFileSummary, digest
) -> Iterator[tuple[bytes | memoryview, bool]]:
    """(line without its newline, whether it had one) for each line of the stream.

    The stream is read in large chunks. A line is a view into its chunk, found with one C-level
    search and never copied (orjson parses views); only a line that spans two chunks is joined.
    Each chunk is hashed on a second thread meanwhile (hashlib releases the GIL), so the sha256 of
    the bytes read costs this thread nothing.
    """
    remaining = -1 if limit is None else limit
    carry = b""
    with ThreadPoolExecutor(1, thread_name_prefix="sha256") as hasher:
        hashing = None
        while chunk := stream.read(_CHUNK if remaining < 0 else min(_CHUNK, remaining)):
            remaining -= len(chunk)
            if hashing is not None:
                hashing.result()  # one chunk in flight at most: memory stays two chunks
            if digest is not None:
                hashing = hasher.submit(digest.update, chunk)
            summary.bytes += len(chunk)
            find = chunk.find
            start = 0
            if carry:
                end = find(b"\n")
                if end < 0:
                    carry += chunk
                    continue
                yield carry + chunk[:end], True
                start, carry = end + 1, b""
            view = memoryview(chunk)
            while (end := find(b"\n", start)) >= 0:
                yield view[start:end], True
                start = end + 1
            carry = chunk[start:]
        if hashing is not None:
            hashing.result()
    if carry:
        yield carry, False  # the file's last line has no newline


def transform_stream(
    stream: IO[bytes],
    minute_file: str,
    sink: RowSink,
    team_aliases: Mapping[str, str] | None = None,
    *,
    limit: int | None = None,
    lines_before: int = 0,
    sha256: bool = True,
) -> MinuteFileSummary:
    """One pass over a minute file: rows to `sink`; the file's size, lines, sha256 and the rest to the summary.

    A piece of a file (`parallel.py`): `stream` positioned at a line's start, `limit` bytes to
    read, `lines_before` lines ahead of it, and no sha256 (the whole file's is taken elsewhere).
    """
    summary = MinuteFileSummary(minute_file)
    transformer = LineTransformer(minute_file, team_aliases)
    derive = transformer.rows
    write = sink.write
    rows_by_table = summary.rows_by_table
    by_msg_type = summary.lines_by_msg_type
    first = last = None
    line_no, lines_with_rows = lines_before, 0
    digest = hashlib.sha256() if sha256 else None
    for line, terminated in _lines(stream, limit, summary, digest):
        line_no += 1
        try:
            out = derive(line_no, line[3:] if line_no == 1 and line[:3] == BOM else line)
        except LineRejected as rejection:
            _reject(summary, transformer.minute_start, sink, line_no, bytes(line), terminated, rejection)
            continue
        by_msg_type[out.msg_type] += 1
        lines_with_rows += 1
        time = out.time
        if first is None or time < first:
            first = time
        if last is None or time > last:
            last = time
        for table, data, count in out.tables:
            rows_by_table[table] += count
            write(table, data)
        codec_len = out.codec_len
        if codec_len is not None:
            codec = out.codec
            if codec is not None and (len(codec) != 2 * codec_len + 2 or codec[:2] != "0x"):
                _codec_len_mismatch(summary, out, line_no)
        if out.msg_type == "142":
            _check_preimage_hash(summary, out, line_no)
    summary.lines = line_no - lines_before
    summary.lines_with_rows = lines_with_rows
    summary.first_time, summary.last_time = first, last
    summary.sha256 = digest.hexdigest() if digest is not None else ""
    return summary


def _reject(
    summary: MinuteFileSummary,
    minute_start: str,
    sink: RowSink,
    line_no: int,
    raw: bytes,
    terminated: bool,
    rejection: LineRejected,
) -> None:
    reason, detail = rejection.reason, rejection.detail
    text = raw[3:] if line_no == 1 and raw[:3] == BOM else raw
    if not text or text.isspace():
        reason, detail = "blank_line", "the line is empty or only white space"
    elif not terminated and reason in ("invalid_json", "invalid_utf8"):
        reason, detail = "truncated_line", f"the last line has no newline and is incomplete ({detail})"
    msg_type = rejection.msg_type
    summary.lines_by_msg_type[msg_type or "unreadable"] += 1
    summary.rejected += 1
    summary.rejected_by_reason[reason] += 1
    summary.rows_by_table[schema.REJECTED] += 1
    row = rejected_row(summary.minute_file, minute_start, line_no, reason, detail, msg_type, raw)
    sink.write(schema.REJECTED, orjson.dumps(row, option=_DUMPS_OPTS))


# Facts only the raw envelope holds: metadata `codec_len` against `codec_encoded`, metadata `h`
# against the preimage hash. The asset checks report them; the rows are kept either way.
def _codec_len_mismatch(summary: MinuteFileSummary, line: LineRows, line_no: int) -> None:
    codec = line.codec or ""  # only called when the line has a codec_encoded
    actual = (len(codec) - 2) // 2 if codec[:2] == "0x" else None
    summary.codec_len_mismatches += 1
    _sample(
        summary.codec_len_samples,
        {
            "minute_file": summary.minute_file,
            "line_no": line_no,
            "codec_len": line.metadata["codec_len"],
            "codec_bytes": actual,
        },
    )


def _check_preimage_hash(summary: MinuteFileSummary, line: LineRows, line_no: int) -> None:
    expected = line.metadata.get("h")
    if expected is not None and line.preimage_hash != expected.lower():
        summary.preimage_hash_mismatches += 1
        _sample(
            summary.preimage_hash_samples,
            {
                "minute_file": summary.minute_file,
                "line_no": line_no,
                "h": expected,
                "preimage_hash": line.preimage_hash,
            },
        )


class ListSink:
    """Keeps rows in memory, decoded: for tests and small previews."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict]] = {t: [] for t in schema.ALL_TABLES}

    def write(self, table: str, data: bytes) -> None:
        self.rows[table].extend(orjson.loads(line) for line in data.splitlines())
