"""Minute files on disk: keys, paths, and finding them without walking a year of history.

A minute file's key is its path under the log root without `.log`: `YYYY/MM/DD/HHMM`. The old
proof of concept kept a flat folder of `HHMM.log`; such a file's date is the UTC date of its
first line's `time`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson

KEY_RE = re.compile(r"\d{4}/\d{2}/\d{2}/\d{4}")
_FLAT_NAME_RE = re.compile(r"(\d{2})(\d{2})\.log")
_FLAT_PROBE_LINES = 50


class BadMinuteKey(ValueError):
    pass


@dataclass(frozen=True)
class MinuteFile:
    key: str
    path: Path
    size: int
    mtime_ns: int

    @property
    def signature(self) -> str:
        """Changes whenever the file does; part of the sensor's run key."""
        return f"{self.size}-{self.mtime_ns}"


def minute_start(key: str) -> datetime:
    if not KEY_RE.fullmatch(key):
        raise BadMinuteKey(f"{key!r} is not a minute file key (YYYY/MM/DD/HHMM)")
    try:
        return datetime.strptime(key, "%Y/%m/%d/%H%M").replace(tzinfo=UTC)
    except ValueError as exc:
        raise BadMinuteKey(f"{key!r} is not a valid minute: {exc}") from None


def minute_start_column(key: str) -> str:
    """The `minute_start` column of every row of a minute file: `2025/04/23/0600` -> `2025-04-23T06:00:00.000000Z`."""
    return f"{minute_start(key):%Y-%m-%dT%H:%M}:00.000000Z"


def key_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y/%m/%d/%H%M")


def is_closed(key: str, now: datetime, grace_seconds: float) -> bool:
    """A file is complete once its minute is over, plus a grace period for lines still in flight."""
    return now >= minute_start(key) + timedelta(seconds=60 + grace_seconds)


def _entry(key: str, path: Path) -> MinuteFile | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return MinuteFile(key, path, st.st_size, st.st_mtime_ns)


def _first_time(path: Path) -> datetime | None:
    """The first parseable envelope `time` among the first lines of a file."""
    try:
        with path.open("rb") as f:
            for _, line in zip(range(_FLAT_PROBE_LINES), f):
                try:
                    text = orjson.loads(line.lstrip(b"\xef\xbb\xbf"))["time"]
                    return datetime.fromisoformat(text[:19]).replace(tzinfo=UTC)
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue
    except OSError:
        return None
    return None


def flat_file_key(path: Path) -> str | None:
    """The key of a flat `HHMM.log`: the minute from its name, the date from its first line's time.

    A file is named for the minute it was received in, so a line stamped 23:59:59 can open the
    00:00 file of the next day: of the dates around the line's, take the one whose HHMM minute
    lies nearest to the line's time.
    """
    m = _FLAT_NAME_RE.fullmatch(path.name)
    if m is None:
        return None
    first = _first_time(path)
    if first is None:
        return None
    hour, minute = int(m.group(1)), int(m.group(2))
    if hour > 23 or minute > 59:
        return None
    candidates = [
        datetime.combine(first.date() + timedelta(days=d), datetime.min.time(), UTC).replace(hour=hour, minute=minute)
        for d in (-1, 0, 1)
    ]
    return key_of(min(candidates, key=lambda c: abs(c - first)))


def locate(root: Path, key: str) -> Path | None:
    """Where the minute file for `key` lives: `root/key.log`, else a flat `root/HHMM.log` of that date."""
    minute_start(key)
    nested = root / f"{key}.log"
    if nested.is_file():
        return nested
    flat = root / f"{key[-4:]}.log"
    if flat.is_file() and flat_file_key(flat) == key:
        return flat
    return None


def _sorted_dirs(path: Path, pattern: str) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(path) if e.is_dir() and re.fullmatch(pattern, e.name))
    except FileNotFoundError:
        return []


def files_in_day(root: Path, day: str) -> list[MinuteFile]:
    out = []
    try:
        entries = list(os.scandir(root / day))
    except FileNotFoundError:
        return out
    for e in entries:
        if e.is_file() and len(e.name) == 8 and e.name.endswith(".log") and e.name[:4].isdigit():
            st = e.stat()
            out.append(MinuteFile(f"{day}/{e.name[:4]}", Path(e.path), st.st_size, st.st_mtime_ns))
    return sorted(out, key=lambda f: f.key)


def flat_files(root: Path) -> list[MinuteFile]:
    out = []
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return out
    for e in entries:
        if e.is_file() and _FLAT_NAME_RE.fullmatch(e.name):
            key = flat_file_key(Path(e.path))
            if key is not None:
                entry = _entry(key, Path(e.path))
                if entry is not None:
                    out.append(entry)
    return sorted(out, key=lambda f: f.key)


def scan(root: Path, since_day: date | None = None) -> list[MinuteFile]:
    """Every minute file under root, sorted by key: nested day folders from `since_day` on, and flat files.

    Years, months and days before `since_day` are pruned before they are listed, so a sensor tick
    costs the same with a year of history on disk as with a day.
    """
    since = since_day.strftime("%Y/%m/%d") if since_day else "0000/00/00"
    found: dict[str, MinuteFile] = {f.key: f for f in flat_files(root)}
    for year in _sorted_dirs(root, r"\d{4}"):
        if year < since[:4]:
            continue
        for month in _sorted_dirs(root / year, r"\d{2}"):
            if f"{year}/{month}" < since[:7]:
                continue
            for day in _sorted_dirs(root / year / month, r"\d{2}"):
                if f"{year}/{month}/{day}" >= since:
                    # A nested file wins over a flat one of the same minute.
                    found.update((f.key, f) for f in files_in_day(root, f"{year}/{month}/{day}"))
    return [found[k] for k in sorted(found)]
