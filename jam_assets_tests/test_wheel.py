"""The built wheel works without the repository: it carries schema/*.json and the instance settings as
package data, loads its definitions and runs a minute file from a venv outside the repository."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from .helpers import sample_line, write_minute
from .test_dagster_tools import checkout  # noqa: F401 (fixture: the tracked files, copied)

pytestmark = pytest.mark.slow


def test_a_wheel_installed_outside_the_repository_runs_a_minute_file(checkout, tmp_path):  # noqa: F811
    wheels = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(wheels), str(checkout)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("jam_assets-*.whl")

    # A fresh venv. Its dependencies are the project venv's (a .pth line adds that site-packages as a
    # plain folder, so the editable install of jam_assets there stays inactive); jam_assets itself
    # comes from the wheel alone.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )

    elsewhere = tmp_path / "elsewhere"
    write_minute(elsewhere / "logs", "2025/04/23/0600", [sample_line("128"), sample_line("13")])
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(elsewhere),
        "JAM_LOG_DIR": str(elsewhere / "logs"),
        "JAM_EXPORT_DIR": str(elsewhere / "exports"),
        "DAGSTER_HOME": str(elsewhere / "home"),
    }
    code = (
        "import jam_assets, jam_assets.definitions as d; print(jam_assets.__file__); "
        "print(len(d.defs().resolve_all_asset_specs()))"
    )
    loaded = subprocess.run(
        [str(python), "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
    )
    assert loaded.returncode == 0, loaded.stderr
    where, assets = loaded.stdout.split()
    assert where.startswith(str(site)) and assets == "15"  # raw_log, 12 tables, leaderboard, quality_report

    ran = subprocess.run(
        [str(python), "-m", "jam_assets.cli", "run"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "Summary: 1 files, 2 lines" in ran.stdout
    assert len((elsewhere / "exports" / "validatorstatistics" / "2025/04/23/0600.jsonl").read_bytes().splitlines()) == 6
