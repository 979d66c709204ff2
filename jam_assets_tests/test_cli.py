"""`jam-etl run` end to end, as `make run` calls it: a real subprocess, instance and DuckDB."""

import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from jam_assets._dagster_compat import BatchedSqliteEventLogStorage
from jam_assets.core.generator import TINY, write_minutes

from .helpers import PROJECT, sample_line

pytestmark = pytest.mark.slow  # a Dagster instance, a server or a subprocess: not in `make test-fast`


def jam_etl(tmp_path, *args, **env):
    full_env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "home"),
        "JAM_EXPORT_DIR": str(tmp_path / "exports"),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "jam_assets.cli", *args],
        cwd=PROJECT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_run_processes_another_log_tree_and_prints_the_summary(tmp_path, monkeypatch):
    logs = tmp_path / "logs"
    write_minutes(logs, TINY, datetime(2025, 4, 23, 6, 0, tzinfo=UTC), 3, seed=5)
    # A flat folder file too: HHMM.log dated by its first line.
    (logs / "0700.log").write_bytes(
        sample_line("141").replace(b"2025-04-24T23:39", b"2025-04-23T07:00") + b"\nnot json\n"
    )
    done = jam_etl(tmp_path, "run", JAM_LOG_DIR=str(logs))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"jam-etl run: 4 minute files under {logs} (4 newly registered)" in out
    assert "materializing 2025/04/23/0600 ... 2025/04/23/0700 in one run" in out
    assert "Summary: 4 files, " in out and ", 1 rejected lines" in out
    # The hints name a command that works as this one was called (`jam-etl` is not on PATH here).
    again = f"{Path(sys.executable).name} -m jam_assets.cli"
    assert f'(try: {again} sql "SELECT team, count(*) FROM blocks GROUP BY 1")' in out
    assert f"(try: {again} leaderboard --metric block_author)" in out
    # Every check on each minute file of the range; here none fails.
    checks = re.findall(r"^  (pass|warn|FAIL) +(\S+): (.*)$", out, re.M)
    assert len(checks) == 36 and set(checks) == {
        ("pass", name, "passed in all 4 minute files") for _, name, _ in checks
    }, checks
    rows = dict(re.findall(r"^  (\w+) +([\d,]+)$", out, re.M))
    assert rows == {
        "blocks": "30",
        "validatorstatistics": "180",
        "corestatistics": "60",
        "servicestatistics": "15",
        "workreports": "7",
        "preimages": "1",
        "assurances": "1",
        "tickets": "0",
        "workpackages": "0",
        "services": "0",
        "segments": "0",
        "rejected_lines": "1",
    }

    # Opened as DAGSTER_HOME, not with instance_for_test(temp_dir=...), which would write its own
    # dagster.yaml through the home's symlink over the project's.
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.event_log_storage, BatchedSqliteEventLogStorage)
        assert instance.get_dynamic_partitions("minute_files") == [
            "2025/04/23/0600",
            "2025/04/23/0601",
            "2025/04/23/0602",
            "2025/04/23/0700",
        ]
        # One run for the minute files (one contiguous range), one for their day's reports.
        reports, run = instance.get_runs()  # newest first
        assert (run.job_name, reports.job_name) == ("minute_tables_job", "daily_reports_job")
        assert run.tags["dagster/asset_partition_range_start"] == "2025/04/23/0600"
        assert reports.tags["dagster/asset_partition_range_start"] == "2025-04-23"

    query = jam_etl(tmp_path, "sql", "SELECT count(*) AS n FROM blocks")
    assert query.returncode == 0 and "30" in query.stdout


def test_run_explains_a_bad_log_dir_without_a_traceback(tmp_path):
    done = jam_etl(tmp_path, "run", JAM_LOG_DIR=str(tmp_path / "missing"))
    assert done.returncode == 2
    assert done.stderr == f"jam-etl: JAM_LOG_DIR {tmp_path / 'missing'} is not a folder\n"
    (tmp_path / "empty").mkdir()
    done = jam_etl(tmp_path, "run", JAM_LOG_DIR=str(tmp_path / "empty"))
    assert (
        done.stderr == f"jam-etl: no closed minute files (YYYY/MM/DD/HHMM.log or HHMM.log) under {tmp_path / 'empty'}\n"
    )
    done = jam_etl(tmp_path, "run", JAM_LOG_DIR=str(tmp_path / "empty"), JAM_TEAM_ALIASES="JAMDUNA")
    assert done.stderr == "jam-etl: JAM_TEAM_ALIASES: 'JAMDUNA' is not NAME=Alias (pairs are separated by commas)\n"
