"""The internals in jam_assets/_dagster_compat.py have a public way back: one range run through Dagster's
stock event log and the public per-partition metadata path records the same materializations as the
batched storage with the private accumulator, and says (once) that it took the slow path."""

import logging
from datetime import UTC, datetime

import dagster as dg
import pytest

from jam_assets import _dagster_compat
from jam_assets.core.generator import TINY, Generator
from jam_assets.defs.assets import minute_file_tables
from jam_assets.defs.partitions import minute_files, range_tags
from jam_assets.home import home_config

pytestmark = pytest.mark.slow  # a Dagster instance, a server or a subprocess: not in `make test-fast`

KEYS = [f"2025/04/23/06{m:02d}" for m in range(3)]


@pytest.fixture
def logs(settings):
    gen = Generator(TINY, seed=6)
    for key in KEYS:
        gen.write_minute(settings.log_root, datetime.strptime(key, "%Y/%m/%d/%H%M").replace(tzinfo=UTC))


def materializations(instance, resources) -> list:
    instance.add_dynamic_partitions(minute_files.name, KEYS)
    result = dg.materialize(
        [minute_file_tables], instance=instance, resources=resources, tags=range_tags(KEYS[0], KEYS[-1])
    )
    assert result.success
    out = []
    for event in result.get_asset_materialization_events():
        meta = {k: v.value for k, v in event.materialization.metadata.items() if k != "warehouse_write"}  # timings
        out.append((event.asset_key.path[-1], event.partition, sorted(meta.items(), key=str)))
    return sorted(out, key=str)


def test_the_public_path_gives_the_same_materializations(settings, resources, logs, tmp_path, monkeypatch, caplog):
    overrides = {
        "event_log_storage": {
            "module": "jam_assets._dagster_compat",
            "class": "BatchedSqliteEventLogStorage",
            "config": {"base_dir": str(tmp_path / "fast" / "history" / "runs")},
        }
    }
    (tmp_path / "fast").mkdir()
    with dg.instance_for_test(overrides=overrides, temp_dir=str(tmp_path / "fast")) as fast:
        expected = materializations(fast, resources)

    monkeypatch.setattr(_dagster_compat, "INTERNALS", False)
    monkeypatch.setattr(_dagster_compat, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="jam_assets"), dg.instance_for_test() as stock:
        assert type(stock.event_log_storage).__name__ == "SqliteEventLogStorage"
        actual = materializations(stock, resources)
    assert actual == expected
    assert len(expected) == 13 * len(KEYS)
    warnings = [r.getMessage() for r in caplog.records if "internals changed" in r.getMessage()]
    assert warnings == [
        "jam_assets: per-partition metadata: Dagster's internals changed (the step's metadata "
        "accumulator is not where it was); using the public path, which is slower"
    ]


def test_a_home_configures_the_batched_storage_only_when_the_internals_are_there(tmp_path, monkeypatch):
    assert "class: BatchedSqliteEventLogStorage" in home_config(tmp_path)
    assert f"base_dir: {tmp_path / 'history' / 'runs'}" in home_config(tmp_path)
    monkeypatch.setattr(_dagster_compat, "INTERNALS", False)
    assert "event_log_storage" not in home_config(tmp_path)
