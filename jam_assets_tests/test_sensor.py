"""The sensor on a temporary log root, evaluated against a real instance."""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from jam_assets.definitions import build_defs
from jam_assets.defs.partitions import minute_files
from jam_assets.defs.sensors import minute_file_sensor

from .helpers import sample_line, warehouse_down, write_minute


def key_at(moment: datetime) -> str:
    return moment.strftime("%Y/%m/%d/%H%M")


def tick(instance, resources, cursor=None):
    ctx = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        definitions=build_defs(resources),
        resources={"settings": resources["settings"]},
    )
    return minute_file_sensor(ctx)


def sensor_clock(monkeypatch) -> list[float]:
    """The sensor's wall clock, as a one-item list the test moves forward."""
    from jam_assets.defs import sensors

    clock = [1_000_000.0]
    monkeypatch.setattr(sensors.time, "time", lambda: clock[0])
    return clock


def added(result):
    return [k for r in result.dynamic_partitions_requests for k in r.partition_keys]


@pytest.mark.slow  # a Dagster instance
def test_new_closed_file_open_minute_unchanged_and_grown(settings, resources):
    now = datetime.now(UTC)
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


@pytest.mark.slow  # a Dagster instance
def test_several_new_files_are_one_range_run(settings, resources):
    now = datetime.now(UTC)
    keys = [key_at(now - timedelta(minutes=m)) for m in (9, 8, 7)]
    for key in keys:
        write_minute(settings.log_root, key, [sample_line("141")])
    with dg.instance_for_test() as instance:
        result = tick(instance, resources)
        assert added(result) == keys
        (request,) = result.run_requests
        assert request.tags["dagster/asset_partition_range_start"] == keys[0]
        assert request.tags["dagster/asset_partition_range_end"] == keys[-1]


@pytest.mark.slow  # a Dagster instance
def test_cursor_stays_small_with_many_old_files(settings, resources):
    old = datetime(2025, 4, 23, 0, 0, tzinfo=UTC)
    for m in range(300):
        write_minute(settings.log_root, key_at(old + timedelta(minutes=m)), [b"{}"])
    with dg.instance_for_test() as instance:
        result = tick(instance, resources)
        assert len(added(result)) == 300
        # Old files are outside the watch window: the cursor keeps only the high-water mark.
        assert len(result.cursor) < 200


@pytest.mark.slow  # a Dagster instance
def test_a_vanished_watched_file_is_forgotten_without_a_request(settings, resources):
    now = datetime.now(UTC)
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


@pytest.mark.slow  # a Dagster instance
def test_a_failed_minute_is_requested_again_with_backoff_until_it_succeeds(settings, resources, monkeypatch):
    """The minute's run fails (the warehouse is down): the sensor asks again a minute later, then after
    two more minutes, and forgets the minute once a run succeeds."""
    from jam_assets.defs import sensors
    from jam_assets.defs.assets import minute_file_tables

    clock = sensor_clock(monkeypatch)
    now = datetime.now(UTC)
    key = key_at(now - timedelta(minutes=5))
    write_minute(settings.log_root, key, [sample_line("128")])
    down = warehouse_down(resources)
    with dg.instance_for_test() as instance:
        first = tick(instance, resources)
        instance.add_dynamic_partitions(minute_files.name, added(first))
        assert not dg.materialize(
            [minute_file_tables], instance=instance, resources=down, partition_key=key, raise_on_error=False
        ).success

        clock[0] += 60  # failures are looked at once a minute
        seen = tick(instance, resources, first.cursor)  # the failure is seen; the first retry waits a minute
        assert seen.run_requests == [] and json.loads(seen.cursor)["retry"] == {key: [0, clock[0] + 60]}
        clock[0] += 30
        assert tick(instance, resources, seen.cursor).run_requests == []
        clock[0] += 31
        due = tick(instance, resources, seen.cursor)
        (retry,) = due.run_requests
        assert (retry.partition_key, retry.tags[sensors.ATTEMPT_TAG]) == (key, "1")
        assert json.loads(due.cursor)["retry"] == {key: [1, clock[0] + 120]}

        assert not dg.materialize(
            [minute_file_tables], instance=instance, resources=down, partition_key=key, raise_on_error=False
        ).success  # the retry fails too
        clock[0] += 61
        assert tick(instance, resources, due.cursor).run_requests == []  # backoff: two minutes this time
        clock[0] += 60
        again = tick(instance, resources, due.cursor)
        assert [r.tags[sensors.ATTEMPT_TAG] for r in again.run_requests] == ["2"]

        assert dg.materialize([minute_file_tables], instance=instance, resources=resources, partition_key=key).success
        clock[0] += 61
        healed = tick(instance, resources, again.cursor)
        assert healed.run_requests == [] and "retry" not in json.loads(healed.cursor)


@pytest.mark.slow  # a Dagster instance
def test_a_minute_with_one_failed_table_shows_failed_and_is_requested_again(settings, resources, monkeypatch):
    """One table's write fails, the others succeed: the UI (Dagster's partition status) shows that
    table's minute failed and the others materialized, and the sensor requests the minute again."""
    from jam_assets.defs.assets import minute_file_tables
    from jam_assets.defs.io_managers import TablesIOManager
    from jam_assets.defs.warehouses import DuckDBWarehouse
    from jam_assets.sinks.writes import WarehouseWriteError

    class TicketsRefused(DuckDBWarehouse):
        def replace_minute_files(self, log, run_id, work_dir, batches, had_rows):
            others = {t: b for t, b in batches.items() if t != "tickets"}
            outcomes = super().replace_minute_files(log, run_id, work_dir, others, had_rows)
            return {**outcomes, "tickets": WarehouseWriteError("tickets", "DuckDB: tickets refused the write")}

    clock = sensor_clock(monkeypatch)
    key = key_at(datetime.now(UTC) - timedelta(minutes=5))
    write_minute(settings.log_root, key, [sample_line("128"), sample_line("131")])
    partly = {
        **resources,
        "table_io_manager": TablesIOManager(settings=settings, warehouse=TicketsRefused(settings=settings)),
    }
    with dg.instance_for_test() as instance:
        first = tick(instance, resources)
        instance.add_dynamic_partitions(minute_files.name, added(first))
        assert not dg.materialize(
            [minute_file_tables], instance=instance, resources=partly, partition_key=key, raise_on_error=False
        ).success

        def status(asset):
            return instance.get_status_by_partition(dg.AssetKey(asset), [key], minute_files)[key]

        assert status("tickets") == dg.AssetPartitionStatus.FAILED
        assert status("blocks") == status("raw_log") == dg.AssetPartitionStatus.MATERIALIZED
        assert (settings.export_root / "blocks" / f"{key}.jsonl").exists()
        assert not (settings.export_root / "tickets" / f"{key}.jsonl").exists()

        clock[0] += 60
        seen = tick(instance, resources, first.cursor)
        assert json.loads(seen.cursor)["retry"] == {key: [0, clock[0] + 60]}
        clock[0] += 61
        (retry,) = tick(instance, resources, seen.cursor).run_requests
        assert retry.partition_key == key
        assert dg.materialize([minute_file_tables], instance=instance, resources=resources, partition_key=key).success
        assert status("tickets") == dg.AssetPartitionStatus.MATERIALIZED


@pytest.mark.slow  # a Dagster instance
def test_a_failed_minute_older_than_a_day_is_left_to_the_operator(settings, resources, monkeypatch):
    """The sensor looks back one day for failed minute files (README, Production): an older one stays
    failed in the UI until it is re-run from its partition list or by `jam-etl run`."""
    from jam_assets.defs.assets import minute_file_tables

    clock = sensor_clock(monkeypatch)
    now = datetime.now(UTC)
    old, recent = key_at(now - timedelta(days=1, minutes=5)), key_at(now - timedelta(minutes=5))
    for key in (old, recent):
        write_minute(settings.log_root, key, [sample_line("128")])
    down = warehouse_down(resources)
    with dg.instance_for_test() as instance:
        first = tick(instance, resources)
        instance.add_dynamic_partitions(minute_files.name, added(first))
        for key in (old, recent):
            assert not dg.materialize(
                [minute_file_tables], instance=instance, resources=down, partition_key=key, raise_on_error=False
            ).success
        clock[0] += 60
        seen = tick(instance, resources, first.cursor)
        assert json.loads(seen.cursor)["retry"] == {recent: [0, clock[0] + 60]}


def test_retries_are_bounded_and_adjacent_minutes_are_one_run():
    from jam_assets.core.watch import RETRY_ATTEMPTS, plan_retries

    keys = ["2025/04/23/0600", "2025/04/23/0601", "2025/04/23/0602", "2025/04/23/0603"]
    failed = {keys[0], keys[1], keys[3]}
    plan = plan_retries(failed, set(), {k: [2, 0.5] for k in failed}, 1.0, keys)
    assert plan.due == [(keys[0], keys[1], 3), (keys[3], keys[3], 3)]
    assert plan.retry == {k: [3, 1.0 + 480] for k in failed}

    last = plan_retries({keys[0]}, set(), {keys[0]: [RETRY_ATTEMPTS, 5.0]}, 10.0, keys)
    assert (last.due, last.given_up, last.retry) == ([], [keys[0]], {keys[0]: [RETRY_ATTEMPTS, 0.0]})
    quiet = plan_retries({keys[0]}, set(), last.retry, 20.0, keys)
    assert (quiet.due, quiet.given_up) == ([], [])  # reported once, never requested again

    running = plan_retries(set(), {keys[2]}, {keys[2]: [1, 0.0]}, 30.0, keys)
    assert (running.due, running.retry) == ([], {keys[2]: [1, 0.0]})  # a retry under way is waited for


def test_ranges_follow_registration_order_and_are_cut_into_days():
    from jam_assets.core.watch import contiguous_ranges
    from jam_assets.defs.partitions import MINUTE_FILES_PER_RUN, backfill_policy

    keys = [f"k{i:04d}" for i in range(10)]
    wanted = set(keys) - {"k0004"}
    assert contiguous_ranges(keys, wanted) == [("k0000", "k0003"), ("k0005", "k0009")]
    assert contiguous_ranges(keys, wanted, 3) == [
        ("k0000", "k0002"),
        ("k0003", "k0003"),
        ("k0005", "k0007"),
        ("k0008", "k0009"),
    ]
    # A UI backfill is cut the same way: a day of minute files per run at most.
    assert (MINUTE_FILES_PER_RUN, backfill_policy.max_partitions_per_run) == (1440, 1440)


def test_a_tick_looks_up_a_few_new_keys_one_by_one_and_loads_them_all_only_for_many():
    from jam_assets.defs.sensors import RegisteredKeys

    class Instance:
        def __init__(self):
            self.calls = []

        def has_dynamic_partition(self, name, key):
            self.calls.append(("has", key))
            return key == "a"

        def get_dynamic_partitions(self, name):
            self.calls.append(("all", None))
            return ["a", "b"]

    instance = Instance()
    registered = RegisteredKeys(instance)
    assert ("a" in registered, "c" in registered) == (True, False)
    assert instance.calls == [("has", "a"), ("has", "c")]
    answers = [f"k{i}" in registered for i in range(RegisteredKeys.LOOKUPS + 10)] + ["b" in registered]
    assert answers == [False] * (RegisteredKeys.LOOKUPS + 10) + [True]
    assert instance.calls.count(("all", None)) == 1 and len(instance.calls) == RegisteredKeys.LOOKUPS + 1
