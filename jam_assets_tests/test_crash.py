"""SIGKILL in the middle of writing: nothing partial is ever visible, and a re-run restores exactly
the output of a clean run. A real `jam-etl run` subprocess, killed for real."""

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import duckdb
import pytest

from jam_assets.core import schema
from jam_assets.core.generator import TINY, Generator

from .helpers import PROJECT

pytestmark = pytest.mark.slow  # a Dagster instance, a server or a subprocess: not in `make test-fast`

KEY = "2025/04/23/0600"


def start(tmp_path, exports):
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "home"),
        "JAM_LOG_DIR": str(tmp_path / "logs"),
        "JAM_EXPORT_DIR": str(exports),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "jam_assets.cli", "run"],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def outputs(exports):
    files = {p.relative_to(exports): p.read_bytes() for p in exports.rglob("*.jsonl") if ".staging" not in p.parts}
    with duckdb.connect(str(exports / "jam.duckdb"), read_only=True) as conn:
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in schema.ALL_TABLES}
    return files, counts


def test_sigkill_mid_write_then_rerun(tmp_path):
    log = tmp_path / "logs" / f"{KEY}.log"
    # A big minute file, so the run is still writing when it is killed.
    Generator(TINY, seed=2).write_file_of_size(log, 24 * 1024 * 1024, datetime(2025, 4, 23, 6, 0, tzinfo=UTC))

    clean = start(tmp_path, tmp_path / "clean")
    assert clean.wait(300) == 0, clean.stdout.read().decode()
    reference = outputs(tmp_path / "clean")

    exports = tmp_path / "crashed"
    victim = start(tmp_path, exports)
    staging = exports / ".staging"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        staged = list(staging.glob(f"*/{KEY}/validatorstatistics.jsonl")) if staging.exists() else []
        if staged and staged[0].stat().st_size > 1024 * 1024:
            break
        assert victim.poll() is None, "the run finished before it could be killed"
        time.sleep(0.05)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(30)

    visible = [p for p in exports.rglob("*.jsonl") if ".staging" not in p.parts]
    assert visible == [], f"partial outputs are visible: {visible}"

    # The killed run still holds the jam_warehouse pool slot: the re-run frees it instead of waiting forever.
    rerun = start(tmp_path, exports)
    out = rerun.communicate(timeout=300)[0].decode()
    assert rerun.returncode == 0, out
    assert "was left running by a jam-etl process that is gone: marked failed, its pool slot freed" in out
    assert outputs(exports) == reference


def test_stale_staging_folders_are_swept(tmp_path):
    from jam_assets.core.staging import sweep_stale

    (tmp_path / "dead-run" / KEY).mkdir(parents=True)
    (tmp_path / "live-run").mkdir()
    old = time.time() - 7 * 3600
    os.utime(tmp_path / "dead-run", (old, old))
    assert sweep_stale(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["live-run"]
