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

It also remembers the minute files whose last run failed (as Dagster's partition status says) and
requests them again, with exponential backoff, a bounded number of times (`plan_retries`).
"""

from __future__ import annotations

import json
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from .minute_files import MinuteFile, is_closed, minute_start, scan

CURSOR_VERSION = 1
RETRY_ATTEMPTS = 6  # then the minute stays failed (and alerted) until someone re-runs it
RETRY_FIRST_DELAY_SECONDS = 60.0  # doubling: 1, 2, 4, 8, 16, 32 minutes
RETRY_MAX_DELAY_SECONDS = 1800.0


@dataclass
class WatchCursor:
    high_water: str | None = None
    watched: dict[str, str] = field(default_factory=dict)
    # minute file -> [retries requested so far, Unix time before which it is not requested again]
    retry: dict[str, list[float]] = field(default_factory=dict)
    failures_checked: float = 0.0  # Unix time of the last look at failed partitions

    def dumps(self) -> str:
        data: dict = {"v": CURSOR_VERSION, "hw": self.high_water, "watch": self.watched}
        if self.retry:
            data["retry"] = self.retry
        if self.failures_checked:
            data["checked"] = self.failures_checked
        return json.dumps(data, sort_keys=True)

    @classmethod
    def loads(cls, text: str | None) -> WatchCursor:
        if not text:
            return cls()
        try:
            data = json.loads(text)
            if data.get("v") != CURSOR_VERSION:
                raise ValueError(f"cursor version {data.get('v')!r}")
            retry = {k: [float(n), float(t)] for k, (n, t) in dict(data.get("retry") or {}).items()}
            return cls(data.get("hw"), dict(data.get("watch") or {}), retry, float(data.get("checked") or 0.0))
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
    registered: Container[str],
    max_new: int = 1440,
) -> TickPlan:
    plan = TickPlan()
    window_start = now - timedelta(seconds=watch_seconds)

    def in_window(key: str) -> bool:
        return minute_start(key) + timedelta(seconds=60) > window_start

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
        high_water = max(handled + ([high_water] if high_water else []))
    plan.cursor = WatchCursor(high_water, watched)
    return plan


def plan_from_disk(
    root: Path,
    cursor: WatchCursor,
    now: datetime,
    grace_seconds: float,
    watch_seconds: float,
    registered: Container[str],
    max_new: int = 1440,
) -> TickPlan:
    files = scan(root, scan_since(cursor, now, watch_seconds))
    return plan_tick(files, cursor, now, grace_seconds, watch_seconds, registered, max_new)


def retry_delay(attempts: int) -> float:
    return min(RETRY_FIRST_DELAY_SECONDS * 2**attempts, RETRY_MAX_DELAY_SECONDS)


@dataclass
class RetryPlan:
    due: list[tuple[str, str, int]] = field(default_factory=list)  # (first, last, attempt) ranges to request
    given_up: list[str] = field(default_factory=list)  # failed on every attempt: left failed, reported once
    retry: dict[str, list[float]] = field(default_factory=dict)  # the cursor's new retry state


def contiguous_groups(ordered_keys: Sequence[str], wanted: set[str]) -> list[list[str]]:
    """Split `wanted` into runs of keys adjacent in registration order (what a partition range means)."""
    groups: list[list[str]] = []
    current: list[str] = []
    for key in ordered_keys:
        if key in wanted:
            current.append(key)
        elif current:
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return groups


def contiguous_ranges(ordered_keys: Sequence[str], wanted: set[str], most: int | None = None) -> list[tuple[str, str]]:
    """(first, last) of each run of adjacent wanted keys, cut into pieces of at most `most` keys."""
    ranges = []
    for group in contiguous_groups(ordered_keys, wanted):
        step = most or len(group)
        ranges.extend((group[i], group[min(i + step, len(group)) - 1]) for i in range(0, len(group), step))
    return ranges


def plan_retries(
    failed: set[str],
    in_progress: set[str],
    retry: dict[str, list[float]],
    now: float,
    registered: Sequence[str],
    attempts: int = RETRY_ATTEMPTS,
) -> RetryPlan:
    """Which failed minute files to request again now.

    `failed`: minute files whose latest run failed (for any of their assets); `in_progress`: ones
    being run. A failed minute is first retried a minute after it is seen, then after 2, 4, ... minutes;
    a minute that stops failing (a retry, a re-run by hand, a changed file) is forgotten. Due minutes
    that are adjacent in registration order are requested together, as one range run.
    """
    plan = RetryPlan()
    due: dict[str, int] = {}
    for key in sorted(failed | (set(retry) & in_progress)):
        done, not_before = retry.get(key, [0, now + retry_delay(0)])
        done = int(done)
        if key in in_progress or now < not_before:
            plan.retry[key] = [done, not_before]
        elif done >= attempts:
            if key in retry and not_before > 0:
                plan.given_up.append(key)
            plan.retry[key] = [done, 0.0]  # 0: reported; kept so that it is not requested again
        else:
            due[key] = done + 1
            plan.retry[key] = [done + 1, now + retry_delay(done + 1)]
    for group in contiguous_groups(registered, set(due)):
        plan.due.append((group[0], group[-1], max(due[k] for k in group)))
    return plan
