"""The leaderboard shown: a self-contained HTML page, and Markdown and SVG for the Dagster UI.

The page needs nothing from the network (CSS, JavaScript and SVG are inline): one sortable table
per metric (a header click sorts, numbers numerically; a day selector shows one day or all), a
chart per timed metric of each team's median per day, the quality report's failures per team,
and when it was built. The chart's y axis is logarithmic: a team sending nanoseconds sits three
decades above the rest instead of flattening them, and the plausible band of the table's
elapsed check is shaded.

Input rows are compute.py's (schema/leaderboard.json and schema/quality_report.json order).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ..core.quality import DEFAULT_ELAPSED_BANDS, ElapsedBand
from .compute import METRICS, TIMED_METRICS

DESCRIPTIONS = {
    "block_author": "time to author a block and compute its state root (blocks.elapsed)",
    "refine": "time to refine a work report (workreports.elapsed)",
    "assurance": "time from learning of a block to sending its assurance (assurances.elapsed)",
    "ticket": "time to generate a ticket (tickets.elapsed)",
    "blocks": "blocks sent (rows of blocks)",
    "work_reports": "work reports sent (rows of workreports)",
    "assurances": "assurances sent (rows of assurances)",
    "tickets": "tickets sent (rows of tickets)",
    "preimages": "preimages sent (rows of preimages)",
}
# Distinguishable on white and for the common colour-vision deficiencies (Okabe-Ito, then Tableau).
PALETTE = (
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000",
    "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1",
)  # fmt: skip
DASHES = ("", "6 3", "2 3", "8 3 2 3")  # when teams outnumber colours


def _int(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def _text(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _built(built_at: datetime | str) -> tuple[str, str]:
    """(machine-readable, human-readable) build time."""
    if isinstance(built_at, str):
        return built_at, built_at
    return built_at.isoformat(), built_at.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def _duration(us: float) -> str:
    """An axis label: 1 µs, 10 ms, 100 s."""
    for unit, size in (("s", 1_000_000), ("ms", 1_000), ("µs", 1)):
        if us >= size:
            return f"{us / size:g} {unit}"
    return f"{us:g} µs"


def team_styles(teams: Iterable[str]) -> dict[str, tuple[str, str]]:
    """team -> (colour, dash pattern), by sorted team name: the same team looks the same in every chart."""
    ordered = sorted(set(teams))
    return {t: (PALETTE[i % len(PALETTE)], DASHES[(i // len(PALETTE)) % len(DASHES)]) for i, t in enumerate(ordered)}


# ------------------------------------------------------------------------------------------------
# The chart (inline SVG)
# ------------------------------------------------------------------------------------------------


def chart_svg(
    rows: Sequence[Mapping[str, Any]],
    metric: str,
    bands: Mapping[str, ElapsedBand] | None = None,
    styles: Mapping[str, tuple[str, str]] | None = None,
) -> str:
    """Each team's median of a timed metric per day: an SVG document (log scale, one line per team)."""
    bands = DEFAULT_ELAPSED_BANDS if bands is None else bands
    points = sorted(
        (r["day"], r["team"], r["median_us"]) for r in rows if r["metric"] == metric and r["median_us"] is not None
    )
    days = sorted({p[0] for p in points})
    styles = styles or team_styles(p[1] for p in points)
    width, height, left, right, top, bottom = 760, 300 if points else 40, 64, 150, 16, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    title = f"{metric}: median per team per day (µs, log scale)"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="system-ui, sans-serif" font-size="11">',
        f"<title>{_text(title)}</title>",
    ]
    if not points:
        out.append(f'<text x="{left}" y="24">No {_text(metric)} values.</text></svg>')
        return "".join(out)
    band = bands.get(METRICS[metric].table)
    # Values below 1 µs (a team sending zeros) are drawn at 1 µs: a log axis has no zero.
    logs = [math.log10(max(1, p[2])) for p in points]
    if band is not None and not band.expect_zero:
        logs += [math.log10(band.low), math.log10(band.high)]
    lo, hi = math.floor(min(logs)), math.ceil(max(logs))
    hi = max(hi, lo + 1)

    def x(day: str) -> float:
        return left + (plot_w / 2 if len(days) == 1 else plot_w * days.index(day) / (len(days) - 1))

    def y(us: int) -> float:
        return top + plot_h * (hi - math.log10(max(1, us))) / (hi - lo)

    if band is not None and not band.expect_zero:
        out.append(
            f'<rect class="band" x="{left}" y="{y(band.high):.1f}" width="{plot_w}" '
            f'height="{y(band.low) - y(band.high):.1f}" fill="#2e7d32" fill-opacity="0.08">'
            f"<title>plausible band: {_duration(band.low)} to {_duration(band.high)}</title></rect>"
        )
    for exponent in range(lo, hi + 1):
        ty = y(10**exponent)
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#ddd"/>'
            f'<text x="{left - 6}" y="{ty + 4:.1f}" text-anchor="end">{_text(_duration(10**exponent))}</text>'
        )
    step = max(1, math.ceil(len(days) / 8))  # at most about 8 day labels
    for i, day in enumerate(days):
        if i % step == 0 or i == len(days) - 1:
            out.append(f'<text x="{x(day):.1f}" y="{top + plot_h + 18}" text-anchor="middle">{_text(day)}</text>')
    out.append(
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#888"/>'
        f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#888"/>'
    )
    by_team: dict[str, list[tuple[str, int]]] = {}
    for day, team, median in points:
        by_team.setdefault(team, []).append((day, median))
    for i, (team, series) in enumerate(sorted(by_team.items())):
        colour, dash = styles.get(team, ("#444", ""))
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        path = " ".join(f"{x(d):.1f},{y(m):.1f}" for d, m in series)
        out.append(f'<g class="team" data-team="{_text(team)}">')
        if len(series) > 1:
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash_attr}/>')
        for d, m in series:
            out.append(
                f'<circle cx="{x(d):.1f}" cy="{y(m):.1f}" r="3.5" fill="{colour}">'
                f"<title>{_text(team)} {_text(d)}: median {_int(m)} µs</title></circle>"
            )
        ly = top + 8 + 15 * i
        out.append(
            f'<line x1="{left + plot_w + 14}" x2="{left + plot_w + 34}" y1="{ly}" y2="{ly}" stroke="{colour}" '
            f'stroke-width="2"{dash_attr}/><text x="{left + plot_w + 40}" y="{ly + 4}">{_text(team)}</text></g>'
        )
    out.append("</svg>")
    return "".join(out)


def chart_markdown(rows: Sequence[Mapping[str, Any]], metric: str) -> str:
    """The chart as a Markdown image with a data: URI (no file, no server needed to show it)."""
    data = base64.b64encode(chart_svg(rows, metric).encode()).decode()
    return f"![{metric}: median per team per day](data:image/svg+xml;base64,{data})"


def write_chart_svg(rows: Sequence[Mapping[str, Any]], metric: str, path: Path) -> Path:
    """The chart as an .svg file (for MetadataValue.path, or to open in a browser)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(chart_svg(rows, metric), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------
# Markdown for the Dagster UI
# ------------------------------------------------------------------------------------------------


def markdown_table(rows: Sequence[Mapping[str, Any]], metric: str) -> str:
    """The ranked teams of a metric on the latest day among `rows`, as a compact Markdown table, then
    the teams not ranked and why."""
    mine = [r for r in rows if r["metric"] == metric]
    if not mine:
        return f"No {metric} rows."
    day = max(r["day"] for r in mine)
    today = [r for r in mine if r["day"] == day]
    ranked = sorted((r for r in today if r["rank"] is not None), key=lambda r: (r["rank"], r["team"]))
    lines = [f"**{metric}** on {day}: {DESCRIPTIONS[metric]}", ""]
    if not ranked:
        lines.append("No team ranked.")
    elif METRICS[metric].timed:
        lines += ["| # | team | median µs | p90 µs | values |", "|--:|:--|--:|--:|--:|"]
        lines += [
            f"| {r['rank']} | {_md(r['team'])} | {_int(r['median_us'])} | {_int(r['p90_us'])} | {_int(r['values'])} |"
            for r in ranked
        ]
    else:
        lines += ["| # | team | values |", "|--:|:--|--:|"]
        lines += [f"| {r['rank']} | {_md(r['team'])} | {_int(r['values'])} |" for r in ranked]
    unranked = sorted((r for r in today if r["rank"] is None), key=lambda r: r["team"])
    if unranked:
        lines += ["", "Not ranked: " + ", ".join(f"{_md(r['team'])} ({r['flag']})" for r in unranked)]
    return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


# ------------------------------------------------------------------------------------------------
# The page
# ------------------------------------------------------------------------------------------------

_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1100px;
       padding: 1rem 1.5rem 3rem; color: #1b1b1b; line-height: 1.4; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
h2 small { font-weight: normal; color: #555; font-size: .95rem; }
nav a { margin-right: .8rem; }
table { border-collapse: collapse; margin: .6rem 0; font-variant-numeric: tabular-nums; }
th, td { padding: .25rem .6rem; border-bottom: 1px solid #eee; text-align: left; }
td.num, th.num { text-align: right; }
th button { all: unset; cursor: pointer; font-weight: 600; }
th button:focus-visible { outline: 2px solid #0072b2; }
th[aria-sort="ascending"] button::after { content: " \\25B2"; }
th[aria-sort="descending"] button::after { content: " \\25BC"; }
tr.flagged td { color: #777; }
.flag { font-size: .85rem; padding: 0 .35rem; border-radius: .6rem; background: #fde2c4; color: #7a3b00; }
.sev-ERROR { color: #b00020; font-weight: 600; } .sev-WARN { color: #8a5a00; }
.meta { color: #555; } .chart { max-width: 100%; height: auto; }
code { font-size: .85rem; word-break: break-all; }
td.nowrap { white-space: nowrap; }
"""

# Sorting: numbers by data-value, numerically; empty cells last whichever the direction.
# The day selector hides the rows of other days in every metric table ("No rows." when none is left).
_JS = """
(function () {
  "use strict";
  function cellKey(row, index, numeric) {
    var cell = row.cells[index];
    var raw = cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : cell.textContent.trim();
    if (raw === "") { return null; }
    return numeric ? Number(raw) : raw;
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var headers = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(headers, function (th, index) {
      var button = th.querySelector("button");
      if (!button) { return; }
      button.addEventListener("click", function () {
        var numeric = th.getAttribute("data-type") === "number";
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(headers, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.querySelectorAll("tr[data-day]"));
        rows.sort(function (a, b) {
          var x = cellKey(a, index, numeric), y = cellKey(b, index, numeric);
          if (x === null || y === null) { return x === y ? 0 : (x === null ? 1 : -1); }
          var order = numeric ? x - y : (x < y ? -1 : (x > y ? 1 : 0));
          return ascending ? order : -order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
        body.appendChild(body.querySelector("tr.none"));
      });
    });
  });
  var picker = document.getElementById("day");
  function showDay() {
    document.querySelectorAll("table.sortable").forEach(function (table) {
      var shown = 0;
      table.querySelectorAll("tr[data-day]").forEach(function (row) {
        row.hidden = picker.value !== "" && row.getAttribute("data-day") !== picker.value;
        if (!row.hidden) { shown += 1; }
      });
      table.querySelector("tr.none").hidden = shown > 0;
    });
  }
  if (picker) { picker.addEventListener("change", showDay); showDay(); }
})();
"""

# (header, row key, numeric)
_TIMED_COLUMNS = (
    ("day", "day", False), ("rank", "rank", True), ("team", "team", False), ("median µs", "median_us", True),
    ("p90 µs", "p90_us", True), ("min µs", "min_us", True), ("max µs", "max_us", True),
    ("values", "values", True), ("flag", "flag", False),
)  # fmt: skip
_COUNT_COLUMNS = (
    ("day", "day", False), ("rank", "rank", True), ("team", "team", False), ("values", "values", True),
    ("flag", "flag", False),
)  # fmt: skip


def _metric_table(metric: str, rows: list[Mapping[str, Any]]) -> str:
    columns = _TIMED_COLUMNS if METRICS[metric].timed else _COUNT_COLUMNS
    head = "".join(
        f'<th scope="col" data-type="{"number" if numeric else "text"}"'
        f'{" class=num" if numeric else ""}><button type="button">{_text(name)}</button></th>'
        for name, _, numeric in columns
    )
    body = []
    for r in rows:
        cells = []
        for _, key, numeric in columns:
            value = r[key]
            if key == "flag" and value:
                cells.append(f'<td><span class="flag">{_text(value)}</span></td>')
            elif numeric:
                cells.append(f'<td class="num" data-value="{"" if value is None else value}">{_int(value)}</td>')
            else:
                wrap = ' class="nowrap"' if key == "day" else ""  # 2025-04-24 on one line
                cells.append(f"<td{wrap}>{_text(value)}</td>")
        flagged = ' class="flagged"' if r["flag"] else ""
        body.append(f'<tr data-day="{_text(r["day"])}"{flagged}>{"".join(cells)}</tr>')
    # Shown when no row is: none at all, or none of the chosen day (the script shows or hides it).
    body.append(f'<tr class="none"{" hidden" if body else ""}><td colspan="{len(columns)}">No rows.</td></tr>')
    return (
        f'<table class="sortable" data-metric="{_text(metric)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _quality_section(quality_rows: Sequence[Mapping[str, Any]]) -> str:
    failing = [r for r in quality_rows if r["rows_failing"]]
    out = ['<section id="quality"><h2>Quality report: failures per team</h2>']
    out.append(
        f'<p class="meta">{_int(len(failing))} of {_int(len(quality_rows))} checks (per day, team, table and check) '
        "found failing lines. The sample is the first failing line by minute file and line number.</p>"
    )
    if not failing:
        out.append("<p>No failures.</p>")
    by_team: dict[str, list[Mapping[str, Any]]] = {}
    for r in sorted(failing, key=lambda r: (r["team"], r["day"], r["table_name"], r["check_name"])):
        by_team.setdefault(r["team"], []).append(r)
    for team, rows in by_team.items():
        out.append(f"<h3>{_text(team)}</h3>")
        out.append(
            "<table><thead><tr><th>day</th><th>table</th><th>check</th><th>severity</th>"
            '<th class="num">failing</th><th class="num">checked</th><th>first failing line</th><th>value</th>'
            "</tr></thead><tbody>"
        )
        for r in rows:
            out.append(
                f'<tr><td class="nowrap">{_text(r["day"])}</td>'
                f"<td>{_text(r['table_name'])}</td><td>{_text(r['check_name'])}</td>"
                f'<td class="sev-{_text(r["severity"])}">{_text(r["severity"])}</td>'
                f'<td class="num">{_int(r["rows_failing"])}</td><td class="num">{_int(r["rows_checked"])}</td>'
                f'<td class="nowrap">{_text(r["sample_minute_file"])} line {_text(r["sample_line_no"])}</td>'
                f"<td><code>{_text(r['sample_value'])}</code></td></tr>"
            )
        out.append("</tbody></table>")
    out.append("</section>")
    return "".join(out)


def render_html(
    leaderboard_rows: Sequence[Mapping[str, Any]],
    quality_rows: Sequence[Mapping[str, Any]],
    built_at: datetime | str,
    bands: Mapping[str, ElapsedBand] | None = None,
) -> str:
    """The whole page: valid HTML5, nothing loaded from elsewhere."""
    machine, human = _built(built_at)
    days = sorted({r["day"] for r in leaderboard_rows}, reverse=True)
    styles = team_styles(r["team"] for r in leaderboard_rows)
    span = f"Days {days[-1]} to {days[0]}" if len(days) > 1 else (f"Day {days[0]}" if days else "No days")
    # The latest day is selected: the tables open on it; the charts show every day.
    options = "".join(
        f'<option value="{_text(d)}"{" selected" if i == 0 else ""}>{_text(d)}</option>' for i, d in enumerate(days)
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>JAM implementer leaderboard</title>",
        f"<style>{_CSS}</style></head><body>",
        "<header><h1>JAM implementer leaderboard</h1>",
        f'<p class="meta">{_text(span)} (UTC days of the minute files). Built <time datetime="{_text(machine)}">'
        f"{_text(human)}</time>.</p></header>",
        "<nav>" + "".join(f'<a href="#metric-{m}">{m}</a>' for m in METRICS) + '<a href="#quality">quality</a></nav>',
        '<p><label>Day <select id="day"><option value="">all days</option>' + options + "</select></label> "
        '<span class="meta">Teams with a flag are listed but not ranked; click a column header to sort.</span></p>',
    ]
    for metric in METRICS:
        rows = sorted(
            (r for r in leaderboard_rows if r["metric"] == metric),
            key=lambda r: (_desc(r["day"]), r["rank"] is None, r["rank"] or 0, r["team"]),
        )
        parts.append(f'<section id="metric-{metric}"><h2>{metric} <small>{_text(DESCRIPTIONS[metric])}</small></h2>')
        if metric in TIMED_METRICS:
            parts.append(chart_svg(leaderboard_rows, metric, bands, styles))
        parts.append(_metric_table(metric, rows) + "</section>")
    parts.append(_quality_section(quality_rows))
    parts.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(parts)


def _desc(day: str) -> tuple[int, ...]:
    """Sort key putting later days first."""
    return tuple(-int(part) for part in day.split("-"))
