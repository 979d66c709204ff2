"""Builds the bundled sample log tree (`jam_assets/sample_logs/`) from the published samples.

Each real or reconstructed sample line is placed in the minute file of its own `time`, among
tiny-profile lines the generator makes for that minute, so every msg_type appears and the tree
spans two UTC days. Run once after the samples change:

    python -m jam_assets.core.bundle ../shared/jam-telemetry/samples jam_assets/sample_logs
"""

from __future__ import annotations

import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import orjson

from .generator import TINY, Generator


def build(samples: Path, out: Path, seed: int = 7) -> list[Path]:
    by_minute: dict[datetime, list[bytes]] = defaultdict(list)
    for sample in sorted(samples.glob("*/msg_*.json")):
        line = sample.read_bytes().strip()
        when = datetime.fromisoformat(orjson.loads(line)["time"][:16]).replace(tzinfo=UTC)
        by_minute[when].append(line + b"\n")
    gen = Generator(TINY, seed)
    written = []
    for minute in sorted(by_minute):
        lines = gen.minute_lines(minute) + by_minute[minute]
        lines.sort(key=lambda line: orjson.loads(line)["time"])
        path = out / f"{minute:%Y/%m/%d/%H%M}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(lines))
        written.append(path)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    for p in build(Path(sys.argv[1]), Path(sys.argv[2])):
        print(p)
