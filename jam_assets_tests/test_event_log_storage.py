"""BatchedSqliteEventLogStorage against Dagster's own SQLite event log: the same records, batched writes."""

import os
import subprocess
import sys
from datetime import UTC, datetime

import dagster as dg
import pytest
from dagster._core.events import DagsterEventType
from dagster._core.storage.event_log import SqliteEventLogStorage

from jam_assets._dagster_compat import BatchedSqliteEventLogStorage
from jam_assets.core.generator import TINY, Generator
from jam_assets.defs.assets import minute_file_tables
from jam_assets.defs.partitions import minute_files, range_tags

from .helpers import warehouse_down

pytestmark = pytest.mark.slow  # a Dagster instance, a server or a subprocess: not in `make test-fast`

KEYS = [f"2025/04/23/06{m:02d}" for m in range(4)]


def batched_instance(tmp_path):
    """A test instance with the batched event log, configured as jam_assets.home configures it."""
    overrides = {
        "event_log_storage": {
            "module": "jam_assets._dagster_compat",
            "class": "BatchedSqliteEventLogStorage",
            "config": {"base_dir": str(tmp_path / "history" / "runs")},
        }
    }
    return dg.instance_for_test(overrides=overrides, temp_dir=str(tmp_path))


ASSETS = ("raw_log", "blocks", "workreports", "rejected_lines")
CHECKS = (("blocks", "hex_formats"), ("rejected_lines", "lines_accounted"), ("raw_log", "codec_len_matches"))


@pytest.fixture
def logs(settings):
    gen = Generator(TINY, seed=4)
    for key in KEYS:
        gen.write_minute(settings.log_root, datetime.strptime(key, "%Y/%m/%d/%H%M").replace(tzinfo=UTC))
    return settings.log_root


@pytest.fixture
def single_materializations(monkeypatch):
    """Counts the materialization, planned and check evaluation events stored one at a time
    (`store_event`), by either storage."""
    seen = []
    original = SqliteEventLogStorage.store_event

    def store_event(self, event):
        if event.dagster_event and event.dagster_event.event_type in (
            DagsterEventType.ASSET_MATERIALIZATION,
            DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
            DagsterEventType.ASSET_CHECK_EVALUATION,
        ):
            seen.append(event.dagster_event.asset_key)
        return original(self, event)

    monkeypatch.setattr(SqliteEventLogStorage, "store_event", store_event)
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "2")  # batches of 2: two of them for the 4 minute files
    return seen


def planned_events(instance, run_id) -> int:
    return len(instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED).records)


def materialize_twice(instance, resources) -> tuple[str, str]:
    instance.add_dynamic_partitions(minute_files.name, KEYS)
    run_ids = []
    for _ in range(2):
        result = dg.materialize(
            [minute_file_tables], instance=instance, resources=resources, tags=range_tags(KEYS[0], KEYS[-1])
        )
        assert result.success
        run_ids.append(result.run_id)
    return run_ids[0], run_ids[1]


def latest_storage_id(instance, key) -> int:
    return instance.fetch_materializations(key, limit=1).records[0].storage_id


def recorded(instance, run_ids) -> dict:
    """What the UI and the asset daemon read back, with run ids replaced by their order."""
    order = {run_id: i for i, run_id in enumerate(run_ids)}
    out = {}
    for asset in ASSETS:
        key = dg.AssetKey(asset)
        records = instance.fetch_materializations(key, limit=100).records
        latest = instance.get_latest_materialization_event(key)
        # The asset index the UI reads: the asset's row (latest materialization) and indexed tags.
        (asset_record,) = instance.get_asset_records([key])
        indexed = asset_record.asset_entry.last_materialization_record
        out[asset] = {
            "indexed_latest": (order[indexed.run_id], indexed.storage_id == latest_storage_id(instance, key)),
            "indexed_tags": sorted(tuple(sorted(t)) for t in instance.get_event_tags_for_asset(key)),
            "partitions": sorted(instance.get_materialized_partitions(key)),
            "events": sorted(
                (
                    order[r.run_id],
                    r.partition_key,
                    tuple(
                        sorted(
                            (k, repr(v.value))
                            for k, v in r.asset_materialization.metadata.items()
                            if k != "warehouse_write"
                        )
                    ),
                )  # timings differ
                for r in records
            ),
            "latest": (order[latest.run_id], latest.dagster_event.partition in KEYS),
            "storage_ids_ascend": [r.storage_id for r in records]
            == sorted((r.storage_id for r in records), reverse=True),
        }
    # The checks' rows per minute file, as the UI reads them, each linked to its run's materialization.
    for asset, check in CHECKS:
        materialized = {
            (r.run_id, r.partition_key): r.storage_id
            for r in instance.fetch_materializations(dg.AssetKey(asset), limit=100).records
        }
        history = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey(asset), check), limit=100
        )
        out[f"{asset}.{check}"] = sorted(
            (
                order[r.run_id],
                r.partition,
                r.status.value,
                r.evaluation.description,
                r.evaluation.target_materialization_data.storage_id == materialized[r.run_id, r.partition],
            )
            for r in history
        )
    return out


def test_a_range_run_records_the_same_events_as_dagsters_storage_in_batches(
    settings, resources, logs, single_materializations, monkeypatch, tmp_path
):
    monkeypatch.delenv("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", raising=False)
    with dg.instance_for_test() as stock:
        assert type(stock.event_log_storage) is SqliteEventLogStorage
        runs = materialize_twice(stock, resources)
        expected = recorded(stock, runs)
        # Dagster's storage writes each of a batch's events on its own: planned and materialized,
        # one per asset per minute file, and a check evaluation per check and minute file, in each
        # of the two runs.
        assert len(single_materializations) == 2 * (2 * 13 + 36) * len(KEYS)
        assert planned_events(stock, runs[0]) == 13 * len(KEYS)

    single_materializations.clear()
    with batched_instance(tmp_path) as batched:
        assert type(batched.event_log_storage) is BatchedSqliteEventLogStorage
        runs = materialize_twice(batched, resources)
        actual = recorded(batched, runs)
        assert single_materializations == []
        assert planned_events(batched, runs[0]) == 13 * len(KEYS)  # per minute file, so failures show per minute

    differing = {
        (a, k): (actual[a][k], expected[a][k]) for a in ASSETS for k in expected[a] if actual[a][k] != expected[a][k]
    }
    assert differing == {}
    for asset, check in CHECKS:
        assert actual[f"{asset}.{check}"] == expected[f"{asset}.{check}"], check
    assert expected["raw_log"]["partitions"] == KEYS
    assert len(expected["blocks"]["events"]) == 2 * len(KEYS)
    assert expected["blocks"]["latest"] == (1, True)
    assert expected["blocks"]["indexed_latest"] == (1, True)
    assert len(expected["blocks"]["indexed_tags"]) == 2 * len(KEYS)  # a data version per event
    assert len(expected["blocks.hex_formats"]) == 2 * len(KEYS)
    assert {e[2:] for e in expected["rejected_lines.lines_accounted"]} == {
        (
            "SUCCEEDED",
            f"passed (checked with 3 other minute files: all {n} lines of 4 minute files accounted for)",
            True,
        )
        for n in {e[3].split("all ")[1].split(" ")[0] for e in expected["rejected_lines.lines_accounted"]}
    }


def test_a_failed_range_run_marks_each_of_its_minute_files_failed(settings, resources, logs, tmp_path):
    """What the UI's partition bar shows: a minute whose run failed is red until a run succeeds."""
    failing = warehouse_down(resources)
    with batched_instance(tmp_path) as instance:
        instance.add_dynamic_partitions(minute_files.name, KEYS)
        result = dg.materialize(
            [minute_file_tables],
            instance=instance,
            resources=failing,
            tags=range_tags(KEYS[0], KEYS[-1]),
            raise_on_error=False,
            selection=["blocks"],
        )
        assert not result.success
        status = instance.get_status_by_partition(dg.AssetKey("blocks"), KEYS, minute_files)
        assert status == {k: dg.AssetPartitionStatus.FAILED for k in KEYS}
        assert dg.materialize(
            [minute_file_tables], instance=instance, resources=resources, partition_key=KEYS[1], selection=["blocks"]
        ).success
        status = instance.get_status_by_partition(dg.AssetKey("blocks"), KEYS, minute_files)
        assert status[KEYS[1]] == dg.AssetPartitionStatus.MATERIALIZED
        assert [status[k] for k in KEYS if k != KEYS[1]] == [dg.AssetPartitionStatus.FAILED] * (len(KEYS) - 1)


def test_an_explicit_base_dir_is_used(tmp_path):
    storage = BatchedSqliteEventLogStorage.from_config_value(None, {"base_dir": str(tmp_path / "runs")})
    assert (tmp_path / "runs" / "index.db").exists()
    storage.dispose()


def test_loading_the_code_location_sets_nothing_and_a_run_turns_event_batching_on():
    """No side effect at import; every process that runs the step batches its events, however the run started."""
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_EVENT_BATCH_SIZE"}
    code = "import os, jam_assets.definitions as d; d.defs(); print(os.environ.get('DAGSTER_EVENT_BATCH_SIZE'))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout == "None\n"


@pytest.mark.parametrize(("given", "expected"), [(None, "1000"), ("7", "7")])
def test_a_run_turns_event_batching_on_unless_told_otherwise(settings, resources, logs, monkeypatch, given, expected):
    if given is None:
        monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE", raising=False)
    else:
        monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", given)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(minute_files.name, KEYS[:1])
        assert dg.materialize(
            [minute_file_tables], instance=instance, resources=resources, partition_key=KEYS[0], selection=["blocks"]
        ).success
    assert os.environ["DAGSTER_EVENT_BATCH_SIZE"] == expected


def check_states(states) -> dict:
    """A check state as the UI reads it: the minute files in each status, and per unfinished run."""

    def keys(subset) -> list[str]:
        return sorted(subset.subset_value.get_partition_keys())

    return {
        key.to_user_string(): (
            {status.value: keys(s) for status, s in state.subsets.items() if keys(s)},
            {run: keys(s) for run, s in state.in_progress_runs.items() if keys(s)},
        )
        for key, state in states.items()
    }


def test_the_check_state_the_ui_reads_is_dagsters_at_every_step(settings, resources, logs, tmp_path, monkeypatch):
    """The storage's own check state (kept per process, brought up to date from newer records) equals
    Dagster's computed from nothing, after each kind of change an operator makes."""
    from dagster._core.storage.asset_check_state import AssetCheckState, bulk_update_asset_check_state

    from jam_assets import _dagster_compat

    failing = warehouse_down(resources)
    monkeypatch.setattr(_dagster_compat, "_PARTITIONS_TTL_SECONDS", 3600.0)  # a reload only when needed
    with batched_instance(tmp_path) as instance:
        storage = instance.event_log_storage
        checks = [
            (key, minute_files)
            for spec in minute_file_tables.check_specs
            for key in [spec.key]
            if key.asset_key.path[0] in ("blocks", "rejected_lines", "raw_log")
        ]
        assert len(checks) >= 3

        def compare(step: str) -> dict:
            ours = check_states(storage.get_asset_check_state(checks))
            with dg.partition_loading_context(dynamic_partitions_store=instance):  # as the webserver calls it
                stock = bulk_update_asset_check_state(instance, checks, {k: AssetCheckState.empty() for k, _ in checks})
            assert ours == check_states(stock), step
            return ours

        instance.add_dynamic_partitions(minute_files.name, KEYS[:2])
        assert compare("nothing run") == {k.to_user_string(): ({}, {}) for k, _ in checks}
        run = dg.materialize(
            [minute_file_tables], instance=instance, resources=resources, tags=range_tags(KEYS[0], KEYS[1])
        )
        after_first = compare("a range run")
        hex_formats = after_first["blocks:hex_formats"][0]
        assert sum(hex_formats.values(), []) == sorted(KEYS[:2])  # every minute file has a status

        # Minute files registered after the keys were loaded (the sensor, between two UI queries).
        instance.add_dynamic_partitions(minute_files.name, KEYS[2:])
        dg.materialize([minute_file_tables], instance=instance, resources=resources, partition_key=KEYS[2])
        assert KEYS[2] in sum(compare("a new minute file").get("blocks:hex_formats")[0].values(), [])

        # blocks re-materialized without its checks: their results are no longer current.
        dg.materialize(
            [minute_file_tables],
            instance=instance,
            resources=resources,
            partition_key=KEYS[0],
            selection=dg.AssetSelection.assets("blocks").without_checks(),
        )
        assert KEYS[0] not in sum(compare("checks out of date")["blocks:hex_formats"][0].values(), [])

        # A run that fails before its checks: their minute file is an execution failure.
        dg.materialize(
            [minute_file_tables],
            instance=instance,
            resources=failing,
            partition_key=KEYS[3],
            raise_on_error=False,
        )
        assert compare("a failed run")["blocks:hex_formats"][0]["EXECUTION_FAILED"] == [KEYS[3]]

        # Retention deletes a minute file.
        instance.delete_dynamic_partition(minute_files.name, KEYS[1])
        monkeypatch.setattr(_dagster_compat, "_PARTITIONS_TTL_SECONDS", 0.0)
        assert KEYS[1] not in str(compare("a minute file deleted"))
        assert run.success
