"""The Dagster home (DAGSTER_HOME) that `make`, `jam-etl`, the tests and the benchmarks use.

`prepare_home(home)` writes `<home>/dagster.yaml`: the project's `dagster.yaml` (the pool limit, run
monitoring, telemetry off) plus the batched SQLite event log (`jam_assets._dagster_compat`) with its
folder spelled out, so nothing depends on DAGSTER_HOME being set. The project's own `dagster.yaml`
has no custom storage, so Dagster's tools work in the repository with no environment at all (a
bare `dagster dev` or `dg dev` makes a temporary home from it, with the stock storage).

A home whose `dagster.yaml` someone else wrote (e.g. a copy of `dagster.postgres.yaml`) is left as
it is. Preparing is done by one process at a time: Dagster's SQLite storages create their tables
without guarding against a second process doing the same.

    python -m jam_assets.home [HOME]    (default: $DAGSTER_HOME, else ./.dagster_home)
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from . import _dagster_compat

GENERATED = "# Written by jam_assets.home from the project's dagster.yaml: edit that file, not this one.\n"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HOME = PROJECT_ROOT / ".dagster_home"


def project_config() -> str:
    """The project's dagster.yaml (packaged with the wheel as jam_assets/instance/dagster.yaml)."""
    return (resources.files("jam_assets") / "instance" / "dagster.yaml").read_text()


def home_config(home: Path) -> str:
    text = GENERATED + project_config()
    if _dagster_compat.INTERNALS:
        text += (
            "# Dagster's SQLite event log, writing a run's per-minute-file events in one transaction per batch.\n"
            "event_log_storage:\n"
            "  module: jam_assets._dagster_compat\n"
            "  class: BatchedSqliteEventLogStorage\n"
            "  config:\n"
            f"    base_dir: {home / 'history' / 'runs'}\n"
        )
    return text


@contextmanager
def home_lock(home: Path) -> Iterator[None]:
    """One process at a time in the home's setup: writing dagster.yaml, and opening the instance
    (Dagster's SQLite storages create their tables when first opened, unguarded)."""
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".jam-etl.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        yield


def prepare_home(home: Path | str | None = None) -> Path:
    """Create the home if needed and (re)write its dagster.yaml if jam_assets wrote it; returns it."""
    home = Path(home or os.environ.get("DAGSTER_HOME") or DEFAULT_HOME).expanduser().resolve()
    config = home / "dagster.yaml"
    with home_lock(home):
        if config.is_symlink():  # a home made by an older version: it linked the project's file
            config.unlink()
        if config.exists() and not config.read_text().startswith(GENERATED):
            return home  # the operator's own configuration
        wanted = home_config(home)
        if not config.exists() or config.read_text() != wanted:
            partial = config.with_suffix(".yaml.partial")
            partial.write_text(wanted)
            os.replace(partial, config)
    return home


@contextmanager
def instance_at(home: Path) -> Iterator:
    """The Dagster instance kept in `home`, opened as a process with DAGSTER_HOME=home opens it."""
    import dagster as dg

    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with dg.DagsterInstance.get() as instance:
            yield instance
    finally:
        if previous is None:
            del os.environ["DAGSTER_HOME"]
        else:
            os.environ["DAGSTER_HOME"] = previous


if __name__ == "__main__":
    print(prepare_home(sys.argv[1] if len(sys.argv) > 1 else None))
