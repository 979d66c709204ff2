"""`dagster dev` as a child process, for the end-to-end test and the benchmarks.

dagster dev ignores a lone SIGINT for a while and leaves its webserver, daemon and code servers
running, so it is started in a process group of its own and the whole group is ended.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def dagster_dev(env: Mapping[str, str], port: int, log: Path) -> Iterator[subprocess.Popen]:
    """`dagster dev -w workspace.yaml` on 127.0.0.1:`port` with `env`, its output in `log`."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dagster"),
                "dev",
                "-w",
                "workspace.yaml",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            cwd=PROJECT_ROOT,
            # as `make dev` does: the daemon and webserver create runs and store their planned events
            env={"DAGSTER_EVENT_BATCH_SIZE": "1000", **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
