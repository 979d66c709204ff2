"""The leaderboard as plain text, for `jam-etl leaderboard [--day YYYY-MM-DD] [--metric block_author]`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .compute import METRICS

_TIMED = (("rank", "rank"), ("team", "team"), ("median µs", "median_us"), ("p90 µs", "p90_us"),
          ("min µs", "min_us"), ("max µs", "max_us"), ("values", "values"), ("flag", "flag"))  # fmt: skip
_COUNT = (("rank", "rank"), ("team", "team"), ("values", "values"), ("flag", "flag"))
_LEFT = {"team", "flag"}


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "" if key == "flag" else "-"
    return f"{value:,}" if isinstance(value, int) else str(value)


def format_table(rows: Sequence[Mapping[str, Any]], metric: str) -> str:
    """One metric's rows as aligned plain-text tables, one per day (oldest first): ranked teams by
    rank, then the flagged ones by team. Numbers are right-aligned with thousands separators."""
    if metric not in METRICS:
        raise KeyError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    columns = _TIMED if METRICS[metric].timed else _COUNT
    mine = [r for r in rows if r["metric"] == metric]
    if not mine:
        return f"No {metric} rows."
    blocks = []
    for day in sorted({r["day"] for r in mine}):
        today = sorted(
            (r for r in mine if r["day"] == day), key=lambda r: (r["rank"] is None, r["rank"] or 0, r["team"])
        )
        table = [[name for name, _ in columns]] + [[_cell(key, r[key]) for _, key in columns] for r in today]
        widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
        lines = [f"{metric} on {day}"]
        for line in table:
            cells = [
                text.ljust(w) if key in _LEFT else text.rjust(w)
                for text, w, (_, key) in zip(line, widths, columns, strict=True)
            ]
            lines.append("  ".join(cells).rstrip())
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
