"""Dagster's own tools accept the project, in a fresh copy of the repository with no environment
variables but PATH and HOME: `dg check defs`, `dg list defs`, `dagster definitions validate`, and
`dg dev` / `dagster dev` serve the code location. Loading the definitions creates nothing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from .helpers import PROJECT, free_port

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """The repository's tracked files as they are in the working tree, and the project's venv."""
    root = tmp_path_factory.mktemp("checkout") / "jam-etl"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT, check=True, capture_output=True).stdout.split(b"\0")
    for name in filter(None, files):
        src, dst = PROJECT / name.decode(), root / name.decode()
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        elif src.exists():
            shutil.copy2(src, dst)
    (root / ".venv").symlink_to(PROJECT / ".venv")
    return root


def bare_env() -> dict[str, str]:
    return {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}


def entries(root: Path) -> set[str]:
    return {
        str(p.relative_to(root)) for p in root.rglob("*") if "__pycache__" not in p.parts and ".venv" not in p.parts
    }


@pytest.mark.parametrize(
    "command",
    [["dg", "check", "defs"], ["dg", "list", "defs"], ["dagster", "definitions", "validate", "-w", "workspace.yaml"]],
)
def test_the_command_succeeds_and_creates_nothing(checkout, command):
    before = entries(checkout)
    done = subprocess.run(command, cwd=checkout, env=bare_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert entries(checkout) == before
    if command[:2] == ["dg", "list"]:
        for name in ("raw_log", "blocks", "rejected_lines", "minute_file_sensor", "minute_tables_job"):
            assert name in done.stdout


@pytest.mark.parametrize(
    "command",
    [
        ["dg", "dev", "-h", "127.0.0.1", "-p", "{port}"],
        ["dagster", "dev", "-h", "127.0.0.1", "-p", "{port}"],
        # The README's `make dev`: in its Dagster home, so dagster dev sees no second dagster.yaml.
        ["make", "--no-print-directory", "dev", "DEV_PORT={port}"],
    ],
)
def test_the_dev_server_serves_the_code_location(checkout, command):
    port = free_port()
    proc = subprocess.Popen(
        [part.format(port=port) for part in command],
        cwd=checkout,
        env=bare_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        locations = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                answer = requests.post(
                    f"http://127.0.0.1:{port}/graphql",
                    timeout=5,
                    json={
                        "query": (
                            "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                            "locationOrLoadError { __typename } } } } }"
                        )
                    },
                )
                locations = answer.json()["data"]["workspaceOrError"]["locationEntries"]
                if locations and all(e["loadStatus"] == "LOADED" for e in locations):
                    break
            except (requests.RequestException, KeyError, TypeError, ValueError):
                pass
            time.sleep(1)
        assert locations == [
            {"name": "jam_assets", "loadStatus": "LOADED", "locationOrLoadError": {"__typename": "RepositoryLocation"}}
        ], locations
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            output = proc.communicate(timeout=30)[0].decode()
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output = proc.communicate(timeout=10)[0].decode()
    assert "will not be used" not in output, output
