"""One measurement in its own process (so peak RSS is its own): `core` or `floor` over one file.

    python bench/core_worker.py core|floor FILE OUTDIR  -> prints JSON {seconds, bytes, lines, peak_rss_mb}
"""

import json
import resource
import sys
import time
from pathlib import Path

import orjson

from jam_assets.core.staging import JsonlStage
from jam_assets.core.transform import transform_stream


def main() -> None:
    mode, path, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    size = path.stat().st_size
    start = time.perf_counter()
    lines = 0
    if mode == "core":
        with path.open("rb") as f, JsonlStage(out) as sink:
            summary = transform_stream(f, "2025/04/23/0600", sink)
        sink.close()
        lines = summary.lines
    else:  # the floor: orjson.loads of every line plus orjson.dumps of a same-sized output
        loads, dumps = orjson.loads, orjson.dumps
        with path.open("rb") as f:
            for line in f:
                dumps(loads(line))
                lines += 1
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "bytes": size, "lines": lines, "peak_rss_mb": peak}))


if __name__ == "__main__":
    main()
