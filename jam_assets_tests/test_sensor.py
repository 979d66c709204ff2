"""The sensor on a temporary log root, evaluated against a real instance."""

import json

from datetime import datetime, timedelta, timezone

import dagster as dg

from jam_assets.definitions import build_defs
from jam_assets.defs.partitions import minute_files
from jam_assets.defs.sensors import minute_file_sensor

from .helpers import sample_line, write_minute


def key_at(moment: datetime) -> str:
    return moment.strftime("%Y/%m/%d/%H%M")


def tick(instance, resources, cursor=None):
    ctx = dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=build_defs(resources), resources={"settings": resources["settings"]}
    )
    return minute_file_sensor(ctx)


def added(result):
    return [k for r in result.dynamic_partitions_requests for k in r.partition_keys]


def test_new_closed_file_open_minute_unchanged_and_grown(settings, resources):
    now = datetime.now(timezone.utc)
    closed, current = key_at(now - timedelta(minutes=5)), key_at(now)
    write_minute(settings.log_root, closed, [sample_line("128")])
    write_minute(settings.log_root, current, [sample_line("128")])
    with dg.instance_for_test() as instance:
        first = tick(instance, resources)
        assert added(first) == [closed]
        (request,) = first.run_requests
        assert request.partition_key == closed and request.run_key.startswith(f"{closed}@")

        # Nothing changed: nothing is requested, and the open minute is still waiting.
        instance.add_dynamic_partitions(minute_files.name, [closed])
        second = tick(instance, resources, first.cursor)
        assert second.run_requests == [] and added(second) == []

        # Late lines arrive: the file is requested again under a new run key.
        with (settings.log_root / f"{closed}.log").open("ab") as f:
            f.write(sample_line("13") + b"\n")
        third = tick(instance, resources, second.cursor)
        (again,) = third.run_requests
        assert again.partition_key == closed and again.run_key != request.run_key
        assert added(third) == []


def test_several_new_files_are_one_range_run(settings, resources):
    now = datetime.now(timezone.utc)
    keys = [key_at(now - timedelta(minutes=m)) for m in (9, 8, 7)]
    for key in keys:
        write_minute(settings.log_root, key, [sample_line("141")])
    with dg.instance_for_test() as instance:
        result = tick(instance, resources)
        assert added(result) == keys
        (request,) = result.run_requests
        assert request.tags["dagster/asset_partition_range_start"] == keys[0]
        assert request.tags["dagster/asset_partition_range_end"] == keys[-1]


def test_cursor_stays_small_with_many_old_files(settings, resources):
    old = datetime(2025, 4, 23, 0, 0, tzinfo=timezone.utc)
    for m in range(300):
        write_minute(settings.log_root, key_at(old + timedelta(minutes=m)), [b"{}"])
    with dg.instance_for_test() as instance:
        result = tick(instance, resources)
        assert len(added(result)) == 300
        # Old files are outside the watch window: the cursor keeps only the high-water mark.
        assert len(result.cursor) < 200


def test_a_vanished_watched_file_is_forgotten_without_a_request(settings, resources):
    now = datetime.now(timezone.utc)
    key = key_at(now - timedelta(minutes=3))
    write_minute(settings.log_root, key, [sample_line("128")])
    with dg.instance_for_test() as instance:
        first = tick(instance, resources)
        assert key in json.loads(first.cursor)["watch"]
        (settings.log_root / f"{key}.log").unlink()
        # (The tick logs a warning; plan_tick's `gone` list is asserted in test_minute_files.)
        second = tick(instance, resources, first.cursor)
        assert second.run_requests == [] and second.dynamic_partitions_requests == []
        assert json.loads(second.cursor)["watch"] == {}
