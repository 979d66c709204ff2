"""One measurement in its own process (so peak RSS is its own): `core` or `floor` over one file.

    python bench/core_worker.py core|floor FILE OUTDIR [WORKERS]
        -> prints JSON {seconds, bytes, lines, peak_rss_mb}

`core` stages every table of the file as the asset does (jam_assets.core.parallel), with WORKERS
processes (default: one per core). peak_rss_mb bounds the memory of the whole: this process's
peak plus, for each worker, the largest worker's peak.
"""

import json
import resource
import sys
import time
from pathlib import Path

import orjson

from jam_assets.core.parallel import MinuteFileJob, default_workers, stage_minute_files


def main() -> None:
    mode, path, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    workers = int(sys.argv[4]) if len(sys.argv) > 4 else None
    size = path.stat().st_size
    start = time.perf_counter()
    lines = 0
    if mode == "core":
        job = MinuteFileJob(path, "2025/04/23/0600", out)
        for _, summary, _ in stage_minute_files([job], workers=workers):
            lines = summary.lines
    else:  # the floor: orjson.loads of every line plus orjson.dumps of a same-sized output
        loads, dumps = orjson.loads, orjson.dumps
        with path.open("rb") as f:
            for line in f:
                dumps(loads(line))
                lines += 1
    seconds = time.perf_counter() - start
    pool = (workers or default_workers()) if mode == "core" else 1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if pool > 1:
        peak += pool * resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    peak /= 1024
    print(json.dumps({"seconds": seconds, "bytes": size, "lines": lines, "peak_rss_mb": peak}))


if __name__ == "__main__":
    main()
