"""Screenshots of the Dagster UI as an operator sees it, with the time each page took to show its content.

    .venv/bin/python scripts/ui_screenshots.py [--out DIR] [--url URL] [--minutes N] [--min-values N]

Without --url it sets up its own instance as the UI tests do (jam_assets_tests/browser.py): the
bundled sample logs (or N generated minutes) processed by `jam-etl run` in a temporary Dagster home,
teams ranked on the leaderboard from --min-values values a day (the samples have fewer than the
default 10), served by `dagster dev` on a free port. With --url it visits a running UI instead
(`make dev`: http://127.0.0.1:3000), which must have raw_log, blocks and the leaderboard
materialized. Nothing is launched. The leaderboard's pictures show its Markdown table and its chart
(the "[Show Markdown]" dialog) as the UI renders them.
Needs Debian's Chromium (scripts/ensure-chromium) and the playwright package. The leaderboard's web
page has scripts/leaderboard_screenshots.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from playwright.sync_api import Page, expect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jam_assets_tests.browser import (  # noqa: E402
    CATALOG,
    GLOBAL_LINEAGE,
    SENSOR,
    View,
    asset_view,
    button,
    check_view,
    chromium,
    metadata_value,
    new_page,
    show_markdown,
    time_to_content,
    ui_instance,
    warm_up,
)

# Taller than the tests' page, so that most pages fit in one picture (the app scrolls inside itself,
# so a full-page screenshot would not show more).
VIEWPORT = {"width": 1600, "height": 1400}


def _open_partition_picker(page: Page) -> None:
    button(page, "Materialize").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Select a partition or create one").click()
    expect(page.get_by_role("menuitem", name="Select all")).to_be_visible()


def _open_materialize_all(page: Page) -> None:
    button(page, "Materialize all").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("Partition selection")).to_be_visible()
    expect(dialog.get_by_text("Loading pipeline and partition sets")).to_have_count(0)


def _show_plots(page: Page) -> None:
    button(page, "Plots").click()
    expect(page.get_by_text("dagster/row_count", exact=True).first).to_be_visible()


def _show_leaderboard_table(page: Page) -> None:
    """The leaderboard's Markdown table, rendered in its metadata row (or its dialog, when long)."""
    metadata_value(page, "leaderboard").scroll_into_view_if_needed()
    show_markdown(page, "leaderboard").scroll_into_view_if_needed()


def _show_leaderboard_chart(page: Page) -> None:
    """The medians chart: the "[Show Markdown]" dialog of `medians`, its SVG images decoded."""
    charts = show_markdown(page, "medians")
    charts.evaluate("async box => { await Promise.all([...box.querySelectorAll('img')].map(i => i.decode())); }")


# (file name, view, what to do once it shows: a click whose result is pictured and timed too)
SHOTS: list[tuple[str, View, Callable[[Page], None] | None]] = [
    ("01-catalog", CATALOG, None),
    ("02-lineage", GLOBAL_LINEAGE, None),
    ("03-raw_log", asset_view("raw_log"), None),
    ("04-raw_log-partitions", asset_view("raw_log", "partitions"), None),
    ("05-raw_log-materialize-dialog", asset_view("raw_log"), _open_partition_picker),
    ("06-raw_log-lineage", asset_view("raw_log", "lineage"), None),
    ("07-raw_log-lineage-materialize-all", asset_view("raw_log", "lineage"), _open_materialize_all),
    ("08-blocks", asset_view("blocks"), None),
    ("09-blocks-plots", asset_view("blocks"), _show_plots),
    ("10-blocks-checks", check_view("blocks", "time_in_window"), None),
    ("11-sensor", SENSOR, None),
    ("12-leaderboard-table", asset_view("leaderboard"), _show_leaderboard_table),
    ("13-leaderboard-chart", asset_view("leaderboard"), _show_leaderboard_chart),
]


def take(page: Page, out: Path) -> None:
    warm_up(page)
    for name, view, then in SHOTS:
        seconds = time_to_content(page, view)
        note = ""
        if then is not None:
            clicked = time_to_content_of(page, then)
            note = f" (+{clicked:.2f}s after the click)"
        path = out / f"{name}.png"
        page.screenshot(path=str(path))
        print(f"{seconds:6.2f}s  {view.path}{note}  -> {path}", flush=True)


def time_to_content_of(page: Page, action: Callable[[Page], None]) -> float:
    started = time.monotonic()
    action(page)
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("ui_screenshots"), help="folder for the PNGs (%(default)s)")
    parser.add_argument("--url", help="a running Dagster UI to visit instead of a fresh instance")
    parser.add_argument("--minutes", type=int, default=0, help="generated minutes instead of the bundled samples")
    parser.add_argument(
        "--min-values", default="2", help="JAM_LEADERBOARD_MIN_VALUES of the instance it sets up (%(default)s)"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        url = args.url
        if url is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="jam-ui-shots-")))
            print("setting up an instance (jam-etl run, then dagster dev)...", flush=True)
            os.environ["JAM_LEADERBOARD_MIN_VALUES"] = args.min_values
            url = stack.enter_context(ui_instance(root, args.minutes)).url
        browser = stack.enter_context(chromium())
        take(new_page(browser, url, VIEWPORT), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
