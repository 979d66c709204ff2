"""Two runs over different days at the same time (how a long history is split across a run queue),
sharing one instance and one DuckDB file: both finish, no lock error, no lost or duplicated row, and
each day's leaderboard is written."""

import os
import subprocess
import sys
from datetime import UTC, datetime

import duckdb
import pytest

from jam_assets.core.generator import TINY, Generator

from .helpers import PROJECT

pytestmark = pytest.mark.slow  # a Dagster instance, a server or a subprocess: not in `make test-fast`


def test_two_concurrent_runs_share_duckdb(tmp_path):
    procs = []
    for i, day in enumerate((23, 24)):
        logs = tmp_path / f"logs{i}"
        key_time = datetime(2025, 4, day, 6, 0, tzinfo=UTC)
        Generator(TINY, seed=i).write_file_of_size(
            logs / key_time.strftime("%Y/%m/%d/%H%M.log"), 12 * 1024 * 1024, key_time
        )
        env = {
            **os.environ,
            "DAGSTER_HOME": str(tmp_path / "home"),
            "JAM_LOG_DIR": str(logs),
            "JAM_EXPORT_DIR": str(tmp_path / "exports"),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "jam_assets.cli", "run"],
                cwd=PROJECT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    outputs = [p.communicate(timeout=300)[0].decode() for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out
        assert "Could not set lock" not in out and "Conflicting lock" not in out, out
    expected = {}
    for key in ("2025/04/23/0600", "2025/04/24/0600"):
        expected[key] = len((tmp_path / "exports" / "blocks" / f"{key}.jsonl").read_bytes().splitlines())
    with duckdb.connect(str(tmp_path / "exports" / "jam.duckdb"), read_only=True) as conn:
        got = dict(conn.execute("SELECT minute_file, count(*) FROM blocks GROUP BY 1").fetchall())
        days = dict(conn.execute("SELECT CAST(day AS VARCHAR), count(*) FROM leaderboard GROUP BY 1").fetchall())
    assert got == expected and all(n > 100 for n in got.values())
    assert set(days) == {"2025-04-23", "2025-04-24"} and all(n > 0 for n in days.values())
