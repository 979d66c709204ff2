"""The instance `make` sets up is the one the README describes: the jam_warehouse pool has one slot,
the run queue takes 4 runs and a backfill's one at a time, and an in-process `jam-etl run` takes the
pool's slot and gives it back."""

import os
import subprocess
import sys

import dagster as dg
import pytest

from jam_assets.defs.assets import POOL
from jam_assets.home import instance_at

from .helpers import PROJECT, sample_line, write_minute

pytestmark = pytest.mark.slow  # a Dagster instance, a server or a subprocess: not in `make test-fast`


def test_the_instance_make_creates_limits_the_warehouse_pool_to_one(tmp_path):
    home = tmp_path / "home"
    subprocess.run(["make", "-s", "--no-print-directory", "home", f"DAGSTER_HOME={home}"], cwd=PROJECT, check=True)
    with instance_at(home) as instance:
        pools = instance.get_concurrency_config().pool_config
        assert (pools.default_pool_limit, pools.pool_granularity.value) == (1, "op")
        assert instance.event_log_storage.get_concurrency_info(POOL).limit == 1
        # The run queue (README, scaling out): 4 runs, a backfill's one at a time.
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None and type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert (queue.max_concurrent_runs, queue.tag_concurrency_limits) == (
            4,
            [{"key": "dagster/backfill", "limit": 1}],
        )

    write_minute(tmp_path / "logs", "2025/04/23/0600", [sample_line("128")])
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "JAM_LOG_DIR": str(tmp_path / "logs"),
        "JAM_EXPORT_DIR": str(tmp_path / "exports"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "jam_assets.cli", "run"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with instance_at(home) as instance:
        info = instance.event_log_storage.get_concurrency_info(POOL)
        assert (info.limit, info.claimed_slots, info.pending_steps) == (1, [], [])
        runs = instance.get_runs()
        assert [(r.job_name, r.status) for r in runs] == [
            ("daily_reports_job", dg.DagsterRunStatus.SUCCESS),
            ("minute_tables_job", dg.DagsterRunStatus.SUCCESS),
        ]
