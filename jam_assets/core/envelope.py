"""The envelope every telemetry line shares: time, metadata, team, sender, elapsed."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

# JAM's common era starts at 2025-01-01T12:00:00Z; a slot lasts 6 seconds.
JAM_EPOCH = 1_735_732_800
SLOT_SECONDS = 6

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

DEFAULT_TEAM_ALIASES: dict[str, str] = {"JAMDUNA": "Jam-Duna"}
UNKNOWN_TEAM = "unknown"


class LineRejected(Exception):
    """A line that cannot become a row. `reason` is a stable code, `detail` says what was found;
    `msg_type` is the line's, when it could be read before the line was rejected."""

    def __init__(self, reason: str, detail: str, msg_type: str | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.msg_type = msg_type


def preview(value: object, limit: int = 60) -> str:
    """A short, safe rendering of a value for a rejection's detail."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_TIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,  # \d must not match other scripts' digits
)


class TimeParser:
    """RFC 3339 -> (`YYYY-MM-DDTHH:MM:SS.ffffffZ`, whole UTC seconds since the Unix epoch).

    A minute file holds thousands of lines from the same minute, so a minute prefix is matched and
    turned into a timestamp once; later lines of that minute are checked with a few string tests.
    """

    __slots__ = ("_minutes",)

    def __init__(self) -> None:
        self._minutes: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM" -> Unix seconds at its start

    def parse(self, text: str) -> tuple[str, int]:
        # The usual shape, `YYYY-MM-DDTHH:MM:SS.fffZ` in a minute seen before: no regex, no calendar.
        if text[-1:] == "Z" and text[19:20] == "." and text[16:17] == ":":
            start = self._minutes.get(text[:16])
            second, fraction = text[17:19], text[20:-1]
            if (
                start is not None
                and second.isdigit()
                and second.isascii()
                and second < "60"
                and 0 < len(fraction) <= 9
                and fraction.isdigit()
                and fraction.isascii()
            ):
                return f"{text[:19]}.{fraction[:6].ljust(6, '0')}Z", start + int(second)
        m = _TIME_RE.fullmatch(text)
        if m is None:
            raise LineRejected("bad_value", f"time is not RFC 3339: {preview(text)}")
        year, month, day, hour, minute, second, fraction, offset = m.groups()
        fraction6 = (fraction or "")[:6].ljust(6, "0")
        sec = int(second)
        if sec > 59:
            raise LineRejected("bad_value", f"time has second {sec}: {preview(text)}")
        if offset in ("Z", "z"):
            prefix = f"{year}-{month}-{day}T{hour}:{minute}"
            start = self._minutes.get(prefix)
            if start is None:
                try:
                    start = int(
                        datetime(int(year), int(month), int(day), int(hour), int(minute), tzinfo=UTC).timestamp()
                    )
                except ValueError as exc:
                    raise LineRejected("bad_value", f"time is not a valid date: {preview(text)} ({exc})") from None
                if len(self._minutes) > 4096:
                    self._minutes.clear()
                self._minutes[prefix] = start
            return f"{prefix}:{second}.{fraction6}Z", start + sec
        # A numeric offset is legal RFC 3339; normalise it to UTC.
        sign = 1 if offset[0] == "+" else -1
        try:
            local = datetime(int(year), int(month), int(day), int(hour), int(minute), sec)
            utc = local - sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
        except ValueError as exc:
            raise LineRejected("bad_value", f"time is not a valid date: {preview(text)} ({exc})") from None
        stamp = int(utc.replace(tzinfo=UTC).timestamp())
        return f"{utc:%Y-%m-%dT%H:%M:%S}.{fraction6}Z", stamp


def slot_of(unix_seconds: int) -> int:
    return (unix_seconds - JAM_EPOCH) // SLOT_SECONDS


def parse_metadata(text: str) -> dict[str, str]:
    """`team=JAMDUNA|codec_len=304` -> {"team": "JAMDUNA", "codec_len": "304"}; pieces without `=` are ignored."""
    out: dict[str, str] = {}
    for piece in text.split("|"):
        key, sep, value = piece.partition("=")
        if sep:
            out[key] = value
    return out
