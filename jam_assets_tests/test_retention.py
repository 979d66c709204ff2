from datetime import UTC, datetime

import dagster as dg
import pytest

from jam_assets.definitions import build_defs
from jam_assets.defs.assets import minute_file_tables
from jam_assets.defs.partitions import minute_files
from jam_assets.defs.retention import prunable
from jam_assets.defs.settings import JamSettings

from .helpers import sample_line, write_minute

pytestmark = pytest.mark.slow  # a Dagster instance, a server or a subprocess: not in `make test-fast`


def test_prunable_keys():
    now = datetime(2025, 6, 22, 6, 1, tzinfo=UTC)
    keys = ["2025/04/23/0559", "2025/04/23/0600", "2025/04/23/0601"]
    assert prunable(keys, now, 60) == ["2025/04/23/0559", "2025/04/23/0600"]


def test_prune_job_deletes_only_old_materialized_keys_and_keeps_data(settings, resources):
    old_done, old_pending = "2025/01/01/0000", "2025/01/01/0001"
    recent = datetime.now(UTC).strftime("%Y/%m/%d/%H%M")
    for key in (old_done, old_pending, recent):
        write_minute(settings.log_root, key, [sample_line("128")])
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(minute_files.name, [old_done, old_pending, recent])
        assert dg.materialize(
            [minute_file_tables], instance=instance, resources=resources, partition_key=old_done
        ).success
        job = build_defs(resources).resolve_job_def("prune_minute_partitions_job")
        result = job.execute_in_process(instance=instance)
        assert result.output_for_node("prune_minute_partitions") == 1
        assert instance.get_dynamic_partitions(minute_files.name) == [old_pending, recent]
        assert (settings.export_root / "blocks" / f"{old_done}.jsonl").exists()


def test_old_exports_are_deleted_only_when_asked(settings, resources):
    from datetime import timedelta

    old, recent = "2025/01/01/0000", (datetime.now(UTC) - timedelta(days=1)).strftime("%Y/%m/%d/%H%M")
    for key in (old, recent):
        write_minute(settings.log_root, key, [sample_line("128")])
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(minute_files.name, [old, recent])
        for key in (old, recent):
            assert dg.materialize(
                [minute_file_tables], instance=instance, resources=resources, partition_key=key
            ).success
        exported = lambda key: sorted(
            p.parent.parent.parent.parent.name for p in settings.export_root.glob(f"*/{key}.jsonl")
        )
        job = build_defs(resources).resolve_job_def("prune_minute_partitions_job")
        assert job.execute_in_process(instance=instance).output_for_node("prune_old_exports") == 0  # default: keep
        assert len(exported(old)) == 12

        week = JamSettings(log_dir=settings.log_dir, export_dir=settings.export_dir, export_retention_days=7)
        keep_a_week = {**resources, "settings": week}
        job = build_defs(keep_a_week).resolve_job_def("prune_minute_partitions_job")
        assert job.execute_in_process(instance=instance).output_for_node("prune_old_exports") == 12
        assert exported(old) == [] and not (settings.export_root / "blocks" / "2025").exists()
        assert len(exported(recent)) == 12
