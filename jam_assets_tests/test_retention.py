from datetime import datetime, timezone

import dagster as dg

from jam_assets.definitions import build_defs
from jam_assets.defs.assets import minute_file_tables
from jam_assets.defs.partitions import minute_files
from jam_assets.defs.retention import prunable

from .helpers import sample_line, write_minute


def test_prunable_keys():
    now = datetime(2025, 6, 22, 6, 1, tzinfo=timezone.utc)
    keys = ["2025/04/23/0559", "2025/04/23/0600", "2025/04/23/0601"]
    assert prunable(keys, now, 60) == ["2025/04/23/0559", "2025/04/23/0600"]


def test_prune_job_deletes_only_old_materialized_keys_and_keeps_data(settings, resources):
    old_done, old_pending = "2025/01/01/0000", "2025/01/01/0001"
    recent = datetime.now(timezone.utc).strftime("%Y/%m/%d/%H%M")
    for key in (old_done, old_pending, recent):
        write_minute(settings.log_root, key, [sample_line("128")])
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(minute_files.name, [old_done, old_pending, recent])
        assert dg.materialize([minute_file_tables], instance=instance, resources=resources, partition_key=old_done).success
        job = build_defs(resources).resolve_job_def("prune_minute_partitions_job")
        result = job.execute_in_process(instance=instance)
        assert result.output_for_node("prune_minute_partitions") == 1
        assert instance.get_dynamic_partitions(minute_files.name) == [old_pending, recent]
        assert (settings.export_root / "blocks" / f"{old_done}.jsonl").exists()
