"""Which minute files to (re)process on a sensor tick, and the small cursor that remembers why.

The cursor holds a high-water mark (the newest key ever requested) and the signatures of the
files still inside the watch window (their minute ended less than `watch_seconds` ago). So it
stays the same size however many files exist, and a tick only lists the day folders that can
hold something new: those from the older of the high-water mark's day and the window's start.

- A closed file (minute over, plus the grace period) newer than the mark is new.
- A closed file inside the window that the cursor does not know is new too (a late file).
- A watched file whose size or mtime changed is requested again (late lines).
- A watched file that is gone is reported, and its outputs are left alone.
- Files older than the window are final: re-run them by hand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from .minute_files import MinuteFile, is_closed, minute_start, scan

CURSOR_VERSION = 1


@dataclass
class WatchCursor:
    high_water: str | None = None
    watched: dict[str, str] = field(default_factory=dict)

    def dumps(self) -> str:
        return json.dumps({"v": CURSOR_VERSION, "hw": self.high_water, "watch": self.watched}, sort_keys=True)

    @classmethod
    def loads(cls, text: str | None) -> WatchCursor:
        if not text:
            return cls()
        try:
            data = json.loads(text)
            if data.get("v") != CURSOR_VERSION:
                raise ValueError(f"cursor version {data.get('v')!r}")
            return cls(data.get("hw"), dict(data.get("watch") or {}))
        except (ValueError, AttributeError, TypeError):
            # An unreadable cursor starts over: keys already registered are not requested again.
            return cls()


@dataclass
class TickPlan:
    new: list[MinuteFile] = field(default_factory=list)  # to register and process
    changed: list[MinuteFile] = field(default_factory=list)  # processed before, grown or rewritten since
    adopted: list[MinuteFile] = field(default_factory=list)  # registered by someone else (e.g. `jam-etl run`)
    gone: list[str] = field(default_factory=list)  # watched, no longer on disk
    waiting: list[str] = field(default_factory=list)  # minute not closed yet
    deferred: int = 0  # new files left for the next tick (per-tick cap)
    cursor: WatchCursor = field(default_factory=WatchCursor)


def scan_since(cursor: WatchCursor, now: datetime, watch_seconds: float) -> date | None:
    if cursor.high_water is None:
        return None  # first tick: everything on disk
    window_start = (now - timedelta(seconds=watch_seconds + 60)).date()
    return min(minute_start(cursor.high_water).date(), window_start)


def plan_tick(
    files: list[MinuteFile],
    cursor: WatchCursor,
    now: datetime,
    grace_seconds: float,
    watch_seconds: float,
    registered: set[str],
    max_new: int = 1440,
) -> TickPlan:
    plan = TickPlan()
    window_start = now - timedelta(seconds=watch_seconds)
    in_window = lambda key: minute_start(key) + timedelta(seconds=60) > window_start
    watched = dict(cursor.watched)
    on_disk = {f.key for f in files}
    high_water = cursor.high_water

    candidates: list[MinuteFile] = []
    for f in files:
        if not is_closed(f.key, now, grace_seconds):
            plan.waiting.append(f.key)
            continue
        previous = watched.get(f.key)
        if previous is not None:
            if previous != f.signature and in_window(f.key):
                plan.changed.append(f)
                watched[f.key] = f.signature
            continue
        if high_water is None or f.key > high_water or in_window(f.key):
            candidates.append(f)

    for f in candidates:
        if f.key in registered:
            plan.adopted.append(f)
            if in_window(f.key):
                watched[f.key] = f.signature
            continue
        if len(plan.new) >= max_new:
            plan.deferred += 1
            continue
        plan.new.append(f)
        if in_window(f.key):
            watched[f.key] = f.signature

    for key in sorted(watched):
        if key not in on_disk:
            plan.gone.append(key)
            del watched[key]
        elif not in_window(key):
            del watched[key]

    # The mark only moves over files handled this tick, so deferred ones are found next time.
    handled = [f.key for f in plan.new] + [f.key for f in plan.adopted]
    if plan.deferred:
        handled = [f.key for f in plan.new]
    if handled:
        high_water = max([*handled, *([high_water] if high_water else [])])
    plan.cursor = WatchCursor(high_water, watched)
    return plan


def plan_from_disk(
    root: Path,
    cursor: WatchCursor,
    now: datetime,
    grace_seconds: float,
    watch_seconds: float,
    registered: set[str],
    max_new: int = 1440,
) -> TickPlan:
    files = scan(root, scan_since(cursor, now, watch_seconds))
    return plan_tick(files, cursor, now, grace_seconds, watch_seconds, registered, max_new)
