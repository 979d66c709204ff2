"""The leaderboard where people look at it, end to end: the bundled samples plus one minute file of a team
sending nanoseconds, processed by `jam-etl run` (one tree for the module), then

- the page `<exports>/leaderboard/index.html` in Chromium, opened from file:// with every other request
  refused and recorded: it renders, sorts, filters by day, loads nothing and logs no error;
- `jam-etl leaderboard` in a subprocess: its exact output, and one `jam-etl: ...` line for each mistake;
- the leaderboard's latest materialization in the Dagster UI (`dagster dev`, started for the last test
  only): its Markdown table and its chart as the UI renders them.

Every expectation comes from the exported rows (`<exports>/leaderboard/YYYY/MM/DD.jsonl` and
`<exports>/quality_report/...`), not from the page's code.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extras)")
# browser.py is a plugin of this module (pytest_plugins below) and is imported first, here.
pytest.register_assert_rewrite("jam_assets_tests.browser")

from playwright.sync_api import Browser, Locator, Page, Route, expect  # noqa: E402

from jam_assets.leaderboard.terminal import format_table  # noqa: E402

from .browser import (  # noqa: E402
    PROJECT,
    UiInstance,
    open_asset,
    prepare_instance,
    serve_ui,
    show_markdown,
    watch_console,
)
from .helpers import read_jsonl, sample_json  # noqa: E402

pytestmark = pytest.mark.slow
pytest_plugins = ["jam_assets_tests.browser"]

# The metrics, in its order (the page's and the CLI's order).
TIMED = ("block_author", "refine", "assurance", "ticket")
COUNTS = ("blocks", "work_reports", "assurances", "tickets", "preimages")
# The samples have fewer than 10 values per team and day: ranked from 2 values, most teams are.
MIN_VALUES = "2"
NANO_MINUTE = "2025/04/24/2341"  # team NANO's blocks, elapsed in nanoseconds; one with a malformed parent
NANO_ELAPSED = (61_000_000_000, 75_000_000_000, 90_000_000_000)
SVG = "{http://www.w3.org/2000/svg}"

# (header, row key, numeric) of the page's tables
TIMED_COLUMNS = (
    ("day", "day", False), ("rank", "rank", True), ("team", "team", False), ("median µs", "median_us", True),
    ("p90 µs", "p90_us", True), ("min µs", "min_us", True), ("max µs", "max_us", True),
    ("values", "values", True), ("flag", "flag", False),
)  # fmt: skip
COUNT_COLUMNS = (
    ("day", "day", False), ("rank", "rank", True), ("team", "team", False), ("values", "values", True),
    ("flag", "flag", False),
)  # fmt: skip


def nano_minute() -> bytes:
    lines = []
    for i, elapsed in enumerate(NANO_ELAPSED):
        line = sample_json("128")
        line["time"] = f"2025-04-24T23:41:{i:02d}.5Z"
        line["metadata"] = "team=NANO|codec_len=304"
        line["elapsed"] = elapsed
        if i == 0:
            line["json_encoded"]["header"]["parent"] = "0xabc"
        lines.append(orjson.dumps(line) + b"\n")
    return b"".join(lines)


@dataclass(frozen=True)
class Processed:
    root: Path
    env: dict[str, str]
    exports: Path
    started: datetime  # before `jam-etl run`
    finished: datetime  # after it

    def rows(self, table: str) -> list[dict[str, Any]]:
        """Every exported row of a per-day table, oldest day first."""
        return [r for path in sorted((self.exports / table).glob("*/*/*.jsonl")) for r in read_jsonl(path)]

    @property
    def days(self) -> list[str]:
        return sorted({r["day"] for r in self.rows("leaderboard")})


@pytest.fixture(scope="module")
def processed() -> Iterator[Processed]:
    with tempfile.TemporaryDirectory(prefix="jam-leaderboard-") as root:
        started = datetime.now(UTC)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("JAM_LEADERBOARD_MIN_VALUES", MIN_VALUES)
            env = prepare_instance(Path(root), extra={NANO_MINUTE: nano_minute()})
        done = Processed(Path(root), env, Path(env["JAM_EXPORT_DIR"]), started, datetime.now(UTC))
        check_the_data(done)
        yield done


def check_the_data(done: Processed) -> None:
    # What the tests below rely on the data to show: two days, a flagged team, an unranked team in a
    # timed metric, a metric without rows on a day, and quality failures.
    board = done.rows("leaderboard")
    assert done.days == ["2025-04-23", "2025-04-24"]
    assert {(r["team"], r["flag"]) for r in board if r["metric"] == "block_author"} >= {("NANO", "unit_suspect")}
    assert any(r["rank"] is None for r in board if r["metric"] == "refine" and r["day"] == done.days[-1])
    assert not [r for r in board if r["metric"] == "assurance" and r["day"] == done.days[0]]
    assert any(q["rows_failing"] for q in done.rows("quality_report"))


# ---------------------------------------------------------------------------------------------
# The page, from file://


@dataclass
class OpenedPage:
    page: Page
    url: str
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    refused: list[str] = field(default_factory=list)  # the ones that were not file://
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions

    def assert_self_contained(self) -> None:
        assert self.refused == []
        assert self.requests == [self.url]  # the page itself, nothing else (not even a favicon)
        assert self.errors == []


@pytest.fixture
def board_page(browser: Browser, processed: Processed) -> Iterator[OpenedPage]:
    """The page opened from file:// in a context of its own; any request but a file:// one is refused."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    opened = OpenedPage(page, (processed.exports / "leaderboard" / "index.html").as_uri())
    page.on("request", lambda request: opened.requests.append(request.url))

    def refuse(route: Route) -> None:
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            opened.refused.append(route.request.url)
            route.abort()

    context.route("**/*", refuse)
    opened.errors = watch_console(page)
    page.goto(opened.url)
    expect(page.locator("table.sortable")).to_have_count(len(TIMED) + len(COUNTS))
    try:
        yield opened
    finally:
        context.close()


def page_order(rows: Sequence[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """A metric's rows as the page lists them: newest day first, then ranked by rank, then the others by team."""
    mine = [r for r in rows if r["metric"] == metric]
    by_rank = sorted(mine, key=lambda r: (r["rank"] is None, r["rank"] or 0, r["team"]))
    return sorted(by_rank, key=lambda r: r["day"], reverse=True)


def clicked(rows: Sequence[dict[str, Any]], key: str, ascending: bool) -> list[dict[str, Any]]:
    """`rows` after a click on column `key`: a stable sort, empty cells last in both directions."""
    filled = [r for r in rows if r[key] is not None]
    return sorted(filled, key=lambda r: r[key], reverse=not ascending) + [r for r in rows if r[key] is None]


def columns(metric: str) -> tuple[tuple[str, str, bool], ...]:
    return TIMED_COLUMNS if metric in TIMED else COUNT_COLUMNS


def cells(row: dict[str, Any], metric: str) -> list[str]:
    """A row's cells as shown: numbers with thousands separators, nothing for null."""
    shown = []
    for _, key, numeric in columns(metric):
        value = row[key]
        shown.append("" if value is None else f"{value:,}" if numeric else str(value))
    return shown


def sortable(page: Page, metric: str) -> Locator:
    return page.locator(f'table.sortable[data-metric="{metric}"]')


def shown_rows(page: Page, metric: str) -> list[list[str]]:
    """The cells of the rows a metric's table shows (rendered, not hidden), top to bottom."""
    return sortable(page, metric).evaluate(
        """t => [...t.tBodies[0].rows]
            .filter(r => r.hasAttribute('data-day') && r.checkVisibility())
            .map(r => [...r.cells].map(c => c.textContent.trim()))"""
    )


def shows_no_rows(page: Page, metric: str) -> bool:
    return sortable(page, metric).evaluate("t => t.querySelector('tr.none').checkVisibility()")


def header(page: Page, metric: str, name: str) -> Locator:
    index = [c[0] for c in columns(metric)].index(name)
    return sortable(page, metric).locator("thead th").nth(index)


def test_the_page_is_self_contained_and_shows_the_tables_charts_quality_and_build_time(
    board_page: OpenedPage, processed: Processed
):
    page = board_page.page
    board, quality = processed.rows("leaderboard"), processed.rows("quality_report")
    newest = processed.days[-1]
    assert page.title() == "JAM implementer leaderboard"

    # The day selector: all days, then each day newest first; the newest is chosen.
    picker = page.locator("select#day")
    expect(picker).to_be_visible()
    options = picker.locator("option").evaluate_all("os => os.map(o => [o.value, o.textContent])")
    assert options == [["", "all days"]] + [[d, d] for d in reversed(processed.days)]
    assert picker.input_value() == newest

    # A table per metric, in the order, with its columns; it shows the newest day's rows.
    assert page.locator("table.sortable").evaluate_all("ts => ts.map(t => t.dataset.metric)") == [*TIMED, *COUNTS]
    for metric in (*TIMED, *COUNTS):
        table = sortable(page, metric)
        expect(table).to_be_attached()
        heads = table.locator("thead th").all_inner_texts()
        assert [h.strip() for h in heads] == [c[0] for c in columns(metric)]
        expected = [cells(r, metric) for r in page_order(board, metric) if r["day"] == newest]
        assert shown_rows(page, metric) == expected, metric
        assert shows_no_rows(page, metric) == (not expected), metric
    flagged = sortable(page, "block_author").locator("tr.flagged", has_text="NANO")
    expect(flagged.locator("span.flag")).to_have_text("unit_suspect")

    # A chart per timed metric: a point per team and day with a median, a legend entry per team.
    for metric in TIMED:
        chart = page.locator(f"section#metric-{metric} svg.chart")
        expect(chart).to_be_visible()
        box = chart.bounding_box()
        assert box is not None and box["width"] > 0 and box["height"] > 0
        points = [r for r in board if r["metric"] == metric and r["median_us"] is not None]
        teams = chart.locator("g.team").evaluate_all("gs => gs.map(g => g.dataset.team)")
        assert teams == sorted({r["team"] for r in points}), metric
        titles = chart.locator("circle > title").all_text_contents()
        assert sorted(titles) == sorted(f"{r['team']} {r['day']}: median {r['median_us']:,} µs" for r in points)
    assert page.locator("svg.chart").count() == len(TIMED)

    # The quality report's failures per team: a heading per team, a row per failing check.
    section = page.locator("section#quality")
    expect(section).to_be_visible()
    failing = sorted(
        (q for q in quality if q["rows_failing"]), key=lambda q: (q["team"], q["day"], q["table_name"], q["check_name"])
    )
    expect(section.locator("p.meta")).to_contain_text(f"{len(failing):,} of {len(quality):,} checks")
    shown = section.locator("h3").evaluate_all(
        """hs => hs.map(h => [h.textContent,
            [...h.nextElementSibling.tBodies[0].rows].map(r => [...r.cells].map(c => c.textContent.trim()))])"""
    )
    expected_quality: dict[str, list[list[str]]] = {}
    for q in failing:
        expected_quality.setdefault(q["team"], []).append(
            [q["day"], q["table_name"], q["check_name"], q["severity"], f"{q['rows_failing']:,}"]
            + [f"{q['rows_checked']:,}", f"{q['sample_minute_file']} line {q['sample_line_no']}"]
            + ["" if q["sample_value"] is None else str(q["sample_value"])]
        )
    assert shown == [[team, rows] for team, rows in expected_quality.items()]
    assert [NANO_MINUTE, "ERROR"] in [[q["sample_minute_file"], q["severity"]] for q in failing if q["team"] == "NANO"]

    # The time it was built: by that `jam-etl run`, machine- and human-readable.
    built_at = page.locator("header time")
    built = datetime.fromisoformat(built_at.get_attribute("datetime") or "")
    assert processed.started <= built <= processed.finished
    expect(built_at).to_have_text(built.strftime("%Y-%m-%d %H:%M:%S UTC"))
    board_page.assert_self_contained()


def test_a_header_click_sorts_ascending_then_descending(board_page: OpenedPage, processed: Processed):
    page = board_page.page
    board, newest = processed.rows("leaderboard"), processed.days[-1]
    # (metric, column): numbers, numbers with empty cells (unranked teams), text
    for metric, name in (("block_author", "p90 µs"), ("refine", "rank"), ("blocks", "team")):
        key = next(c[1] for c in columns(metric) if c[0] == name)
        rows = page_order(board, metric)  # every day's rows: a sort moves the hidden ones too
        for ascending, state in ((True, "ascending"), (False, "descending")):
            header(page, metric, name).locator("button").click()
            expect(header(page, metric, name)).to_have_attribute("aria-sort", state)
            rows = clicked(rows, key, ascending)
            expected = [cells(r, metric) for r in rows if r["day"] == newest]
            assert shown_rows(page, metric) == expected, (metric, name, state)
        # One sorted column at a time.
        sorted_headers = sortable(page, metric).locator("thead th[aria-sort]")
        expect(sorted_headers).to_have_count(1)
    # The day selector keeps the sorted order: all days, sorted by team descending.
    page.locator("select#day").select_option("")
    by_team = clicked(clicked(page_order(board, "blocks"), "team", True), "team", False)
    assert shown_rows(page, "blocks") == [cells(r, "blocks") for r in by_team]
    # Another column starts ascending, and the one sorted before loses its arrow.
    header(page, "block_author", "team").locator("button").click()
    expect(header(page, "block_author", "team")).to_have_attribute("aria-sort", "ascending")
    expect(header(page, "block_author", "p90 µs")).not_to_have_attribute("aria-sort", re.compile(".*"))
    board_page.assert_self_contained()


def test_the_day_selector_shows_that_days_rows(board_page: OpenedPage, processed: Processed):
    page = board_page.page
    board = processed.rows("leaderboard")
    picker = page.locator("select#day")
    for day in [*processed.days, ""]:  # each day, then all days
        picker.select_option(day)
        for metric in (*TIMED, *COUNTS):
            expected = [cells(r, metric) for r in page_order(board, metric) if day in ("", r["day"])]
            assert shown_rows(page, metric) == expected, (day, metric)
            assert shows_no_rows(page, metric) == (not expected), (day, metric)
    # The oldest day has no assurance rows: its table says so.
    picker.select_option(processed.days[0])
    expect(sortable(page, "assurance").locator("tr.none")).to_have_text("No rows.")
    board_page.assert_self_contained()


# ---------------------------------------------------------------------------------------------
# `jam-etl leaderboard`


def jam_etl(*calls: tuple[dict[str, str], Sequence[str]]) -> list[subprocess.CompletedProcess[str]]:
    """`python -m jam_assets.cli ARGS` with ENV for each (ENV, ARGS), side by side (each takes seconds:
    the command imports Dagster)."""

    def one(call: tuple[dict[str, str], Sequence[str]]) -> subprocess.CompletedProcess[str]:
        env, args = call
        command = [sys.executable, "-m", "jam_assets.cli", *args]
        return subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, calls))


def test_jam_etl_leaderboard_prints_one_metric_of_one_day(processed: Processed):
    board, oldest = processed.rows("leaderboard"), processed.days[0]
    day_rows = [r for r in board if r["day"] == oldest]
    (done,) = jam_etl((processed.env, ["leaderboard", "--day", oldest, "--metric", "block_author"]))
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == format_table(day_rows, "block_author") + "\n"
    # Read back independently: a title, a header, then the teams by rank and the unranked by team.
    lines = done.stdout.splitlines()
    assert lines[0] == f"block_author on {oldest}"
    assert lines[1].split() == ["rank", "team", "median", "µs", "p90", "µs", "min", "µs", "max", "µs", "values", "flag"]
    mine = [r for r in day_rows if r["metric"] == "block_author"]
    ordered = sorted(mine, key=lambda r: (r["rank"] is None, r["rank"] or 0, r["team"]))
    assert [line.split() for line in lines[2:]] == [
        ["-" if r["rank"] is None else str(r["rank"]), r["team"]]
        + [f"{r[k]:,}" for k in ("median_us", "p90_us", "min_us", "max_us", "values")]
        + ([r["flag"]] if r["flag"] else [])
        for r in ordered
    ]


def test_jam_etl_leaderboard_defaults_to_the_newest_day(processed: Processed):
    board, newest = processed.rows("leaderboard"), processed.days[-1]
    newest_rows = [r for r in board if r["day"] == newest]
    # block_author by default; a timed metric with an unranked team, a count, a metric with no row that day.
    metrics = ("block_author", "refine", "blocks", "ticket")
    default, *others = jam_etl(
        (processed.env, ["leaderboard"]), *((processed.env, ["leaderboard", "--metric", m]) for m in metrics[1:])
    )
    assert default.stdout.startswith(f"block_author on {newest}\n")
    for metric, done in zip(metrics, [default, *others], strict=True):
        assert (done.returncode, done.stderr) == (0, ""), metric
        assert done.stdout == format_table(newest_rows, metric) + "\n", metric
    assert others[-1].stdout == "No ticket rows.\n"


def test_jam_etl_leaderboard_explains_each_mistake_in_one_line(processed: Processed, tmp_path: Path):
    metrics = ", ".join((*TIMED, *COUNTS))
    first, last = processed.days[0], processed.days[-1]
    nothing = tmp_path / "no-exports"
    mistakes = {
        "unknown metric": (
            processed.env,
            ["--metric", "block_authors"],
            f"jam-etl: --metric 'block_authors' is not one of: {metrics}",
        ),
        "a day without a leaderboard": (
            processed.env,
            ["--day", "2025-04-25"],
            f"jam-etl: no leaderboard for 2025-04-25; days exported: {first} ... {last}",
        ),
        "no export at all": (
            {**processed.env, "JAM_EXPORT_DIR": str(nothing)},
            [],
            f"jam-etl: no leaderboard under {nothing / 'leaderboard'} yet: run `make run` "
            f"(or `{Path(sys.executable).name} -m jam_assets.cli run`) first",
        ),
        # Not written YYYY-MM-DD: one line naming it (whatever it says of the format).
        "a day misspelt": (processed.env, ["--day", "2025-4-24"], None),
    }
    done = jam_etl(*((env, ["leaderboard", *args]) for env, args, _ in mistakes.values()))
    for (what, (_, _, message)), run in zip(mistakes.items(), done, strict=True):
        assert (run.returncode, run.stdout) == (2, ""), what
        if message is None:
            assert re.fullmatch(r"jam-etl: [^\n]*'?2025-4-24'?[^\n]*\n", run.stderr), run.stderr
        else:
            assert run.stderr == message + "\n", what
    assert not nothing.exists()  # asking created nothing


# ---------------------------------------------------------------------------------------------
# The Dagster UI (last: `dagster dev`'s daemon may recompute the days while it runs)


@pytest.fixture(scope="module")
def ui(processed: Processed) -> Iterator[UiInstance]:
    """`dagster dev` over the processed tree (the `page` fixture of browser.py is based at its URL)."""
    log = processed.root / "dagster-dev.log"
    with serve_ui(processed.env, log) as url:
        yield UiInstance(url, processed.root / "home", processed.root / "logs", processed.exports, log, processed.env)


def ranked_tables(rows: Sequence[dict[str, Any]], day: str) -> list[list[list[str]]]:
    """The Markdown tables of a day: one per timed metric with a ranked team (header, then by rank)."""
    tables = []
    for metric in TIMED:
        ranked = sorted(
            (r for r in rows if r["day"] == day and r["metric"] == metric and r["rank"] is not None),
            key=lambda r: (r["rank"], r["team"]),
        )
        if ranked:
            tables.append(
                [["#", "team", "median µs", "p90 µs", "values"]]
                + [
                    [str(r["rank"]), r["team"], *(f"{r[k]:,}" for k in ("median_us", "p90_us", "values"))]
                    for r in ranked
                ]
            )
    return tables


def test_the_dagster_ui_renders_the_leaderboard_table_and_the_chart(
    page: Page, console_errors: list[str], processed: Processed
):
    board = processed.rows("leaderboard")
    open_asset(page, "leaderboard")

    # The Markdown (MetadataValue.md) renders as HTML: its tables and its text.
    table_md = show_markdown(page, "leaderboard")
    shown_day = re.match(r"Day (\d{4}-\d{2}-\d{2})", table_md.inner_text().strip())
    assert shown_day is not None, table_md.inner_text()
    day = shown_day[1]  # the newest day of the latest materialization (jam-etl run's, or the sensor's since)
    assert day in processed.days
    tables = table_md.locator("table").evaluate_all(
        "ts => ts.map(t => [...t.rows].map(r => [...r.cells].map(c => c.textContent.trim())))"
    )
    assert tables == ranked_tables(board, day)
    text = table_md.inner_text()
    for metric in TIMED:
        unranked = sorted((r for r in board if (r["day"], r["metric"]) == (day, metric) and r["rank"] is None),
                          key=lambda r: r["team"])  # fmt: skip
        if unranked:  # the Markdown escapes _ in team names and flags; the rendered text has them back
            assert "Not ranked: " + ", ".join(f"{r['team']} ({r['flag']})" for r in unranked) in text, metric
    if page.get_by_role("dialog").count():
        page.keyboard.press("Escape")
        expect(page.get_by_role("dialog")).to_have_count(0)

    # The chart: a Markdown image per timed metric, an SVG in a data: URI, loaded and decoded.
    charts = show_markdown(page, "medians")
    images = charts.locator("img")
    expect(images).to_have_count(len(TIMED))
    charts.evaluate("async box => { await Promise.all([...box.querySelectorAll('img')].map(i => i.decode())); }")
    # Its points: each team's median on every day up to the materialized one (30 days at most).
    oldest = (date.fromisoformat(day) - timedelta(days=29)).isoformat()
    points = {
        m: sorted(
            f"{r['team']} {r['day']}: median {r['median_us']:,} µs"
            for r in board
            if r["metric"] == m and r["median_us"] is not None and oldest <= r["day"] <= day
        )
        for m in TIMED
    }
    loaded = images.evaluate_all("is => is.map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
    # 760 by 300 pixels, or 760 by 40 saying "No <metric> values."
    assert loaded == [[f"{m}: median per team per day", True, 760, 300 if points[m] else 40] for m in TIMED]
    for img in images.all():
        box = img.bounding_box()
        assert box is not None and box["width"] > 0 and box["height"] > 0
    for metric, img in zip(TIMED, images.all(), strict=True):
        src = img.get_attribute("src") or ""
        assert src.startswith("data:image/svg+xml;base64,")
        svg = ET.fromstring(base64.b64decode(src.removeprefix("data:image/svg+xml;base64,")))
        assert sorted(c.findtext(f"{SVG}title") or "" for c in svg.iter(f"{SVG}circle")) == points[metric], metric
    assert console_errors == []
