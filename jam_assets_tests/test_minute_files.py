"""Keys, flat folders, pruned scans, and the sensor's tick plan (pure, no Dagster)."""

import os
from datetime import UTC, date, datetime, timedelta

import pytest

from jam_assets.core import minute_files as mf
from jam_assets.core.watch import WatchCursor, plan_from_disk, plan_tick, scan_since

from .helpers import sample_line, write_minute

UTC = UTC


def line_at(when: str) -> bytes:
    return sample_line("141").replace(b"2025-04-24T23:39:00.128032275Z", when.encode())


def test_minute_start_and_bad_keys():
    assert mf.minute_start("2025/04/23/0600") == datetime(2025, 4, 23, 6, 0, tzinfo=UTC)
    with pytest.raises(mf.BadMinuteKey, match="is not a minute file key"):
        mf.minute_start("2025-04-23/0600")
    with pytest.raises(mf.BadMinuteKey, match="is not a valid minute"):
        mf.minute_start("2025/04/23/2460")


def test_is_closed_waits_for_the_grace_period():
    key = "2025/04/23/0600"
    assert not mf.is_closed(key, datetime(2025, 4, 23, 6, 0, 59, tzinfo=UTC), 10)
    assert not mf.is_closed(key, datetime(2025, 4, 23, 6, 1, 9, tzinfo=UTC), 10)
    assert mf.is_closed(key, datetime(2025, 4, 23, 6, 1, 10, tzinfo=UTC), 10)


def test_flat_folder_dates_come_from_the_first_line(tmp_path):
    (tmp_path / "0600.log").write_bytes(b"garbage\n" + line_at("2025-04-23T06:00:01.5Z") + b"\n")
    # Received just after midnight, stamped just before: the file belongs to the new day.
    (tmp_path / "0000.log").write_bytes(line_at("2025-04-23T23:59:59.9Z") + b"\n")
    (tmp_path / "notes.log").write_bytes(b"x")
    found = mf.scan(tmp_path)
    assert [f.key for f in found] == ["2025/04/23/0600", "2025/04/24/0000"]
    assert mf.locate(tmp_path, "2025/04/24/0000") == tmp_path / "0000.log"
    assert mf.locate(tmp_path, "2025/04/25/0000") is None


def test_scan_prunes_old_days(tmp_path):
    for key in ("2024/12/31/2359", "2025/04/22/0600", "2025/04/23/0600", "2025/04/23/0601"):
        write_minute(tmp_path, key, [b"{}"])
    assert [f.key for f in mf.scan(tmp_path)] == [
        "2024/12/31/2359",
        "2025/04/22/0600",
        "2025/04/23/0600",
        "2025/04/23/0601",
    ]
    assert [f.key for f in mf.scan(tmp_path, date(2025, 4, 23))] == ["2025/04/23/0600", "2025/04/23/0601"]


def files(*specs):
    return [mf.MinuteFile(key, None, size, 1) for key, size in specs]


NOW = datetime(2025, 4, 23, 6, 3, 20, tzinfo=UTC)


def test_plan_new_closed_files_and_the_open_minute():
    plan = plan_tick(
        files(("2025/04/23/0601", 10), ("2025/04/23/0602", 10), ("2025/04/23/0603", 5)),
        WatchCursor(),
        NOW,
        10,
        3600,
        registered=set(),
    )
    assert [f.key for f in plan.new] == ["2025/04/23/0601", "2025/04/23/0602"]
    assert plan.waiting == ["2025/04/23/0603"]
    assert plan.cursor.high_water == "2025/04/23/0602"
    assert plan.cursor.watched == {"2025/04/23/0601": "10-1", "2025/04/23/0602": "10-1"}


def test_plan_unchanged_is_quiet_grown_is_requested_gone_is_reported():
    cursor = WatchCursor("2025/04/23/0602", {"2025/04/23/0601": "10-1", "2025/04/23/0602": "10-1"})
    plan = plan_tick(
        files(("2025/04/23/0601", 10), ("2025/04/23/0603", 4)),
        cursor,
        NOW + timedelta(minutes=1),
        10,
        3600,
        registered={"2025/04/23/0601", "2025/04/23/0602"},
    )
    assert [f.key for f in plan.new] == ["2025/04/23/0603"]
    assert plan.changed == [] and plan.gone == ["2025/04/23/0602"]
    plan2 = plan_tick(
        files(("2025/04/23/0601", 99), ("2025/04/23/0603", 4)),
        plan.cursor,
        NOW + timedelta(minutes=1),
        10,
        3600,
        registered={"2025/04/23/0601", "2025/04/23/0603"},
    )
    assert [f.key for f in plan2.changed] == ["2025/04/23/0601"] and plan2.new == []
    assert plan2.cursor.watched["2025/04/23/0601"] == "99-1"


def test_plan_forgets_files_past_the_watch_window_and_caps_new_files():
    cursor = WatchCursor("2025/04/23/0601", {"2025/04/23/0601": "10-1"})
    later = NOW + timedelta(hours=2)
    plan = plan_tick(files(("2025/04/23/0601", 11)), cursor, later, 10, 3600, registered={"2025/04/23/0601"})
    assert plan.changed == [] and plan.cursor.watched == {}
    many = files(*[(f"2025/04/23/07{m:02d}", 1) for m in range(30)])
    capped = plan_tick(many, WatchCursor(), later, 10, 3600, registered=set(), max_new=20)
    assert len(capped.new) == 20 and capped.deferred == 10
    assert capped.cursor.high_water == "2025/04/23/0719"
    rest = plan_tick(many, capped.cursor, later, 10, 3600, registered={f.key for f in capped.new}, max_new=20)
    assert [f.key for f in rest.new] == [f"2025/04/23/07{m}" for m in range(20, 30)]


def test_plan_adopts_keys_registered_elsewhere():
    plan = plan_tick(files(("2025/04/23/0601", 10)), WatchCursor(), NOW, 10, 3600, registered={"2025/04/23/0601"})
    assert plan.new == [] and [f.key for f in plan.adopted] == ["2025/04/23/0601"]
    assert plan.cursor.watched == {"2025/04/23/0601": "10-1"}


def test_a_tick_lists_only_recent_days(tmp_path, monkeypatch):
    for day in range(1, 31):
        write_minute(tmp_path, f"2025/03/{day:02d}/0000", [b"{}"])
    write_minute(tmp_path, "2025/04/23/0601", [b"{}"])
    listed = []
    real_scandir = os.scandir
    monkeypatch.setattr(mf.os, "scandir", lambda p: listed.append(str(p)) or real_scandir(p))
    cursor = WatchCursor("2025/04/23/0600", {})
    assert scan_since(cursor, NOW, 3600) == date(2025, 4, 23)
    plan = plan_from_disk(tmp_path, cursor, NOW, 10, 3600, registered=set())
    assert [f.key for f in plan.new] == ["2025/04/23/0601"]
    assert not any("/2025/03" in p for p in listed), "March's day folders were listed"


def test_cursor_round_trip_and_garbage():
    c = WatchCursor("2025/04/23/0601", {"2025/04/23/0601": "1-2"})
    assert WatchCursor.loads(c.dumps()) == c
    assert WatchCursor.loads("not json") == WatchCursor()
    assert WatchCursor.loads(None) == WatchCursor()
