"""Screenshots of the leaderboard page, `<export root>/leaderboard/index.html`, in Chromium.

    .venv/bin/python scripts/leaderboard_screenshots.py [--out DIR] [--exports DIR] [--minutes N] [--min-values N]

Without --exports it makes its own export tree as the page tests do (jam_assets_tests/browser.py): the
bundled sample logs (or N generated minutes) processed by `jam-etl run` in a temporary Dagster home,
teams ranked from --min-values values a day (the samples have fewer than the default 10). With
--exports it pictures the page of an existing export root (after `make run`: ./exports).

The page is opened from file:// with every other request refused, as the machines are offline: a
refused request or a console error is printed and the exit status is 1. Needs Debian's Chromium
(scripts/ensure-chromium) and the playwright package.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from playwright.sync_api import Page, Route, ViewportSize, expect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jam_assets_tests.browser import chromium, prepare_instance, watch_console  # noqa: E402

VIEWPORT: ViewportSize = {"width": 1280, "height": 1000}


def _as_opened(page: Page) -> None:
    pass


def _sorted_by_p90(page: Page) -> None:
    """block_author sorted by p90, descending (two clicks on its header)."""
    th = page.locator('table.sortable[data-metric="block_author"] thead th').filter(has_text="p90")
    th.locator("button").click()
    th.locator("button").click()
    expect(th).to_have_attribute("aria-sort", "descending")


def _all_days(page: Page) -> None:
    page.locator("select#day").select_option("")


# (file name, what to do first, what to picture: a CSS selector, or "" for the whole page)
SHOTS: list[tuple[str, Callable[[Page], None], str]] = [
    ("01-page-top", _as_opened, "viewport"),
    ("02-page-full", _as_opened, ""),
    ("03-block_author-sorted-by-p90-descending", _sorted_by_p90, "section#metric-block_author"),
    ("04-all-days-full", _all_days, ""),
    ("05-quality", _as_opened, "section#quality"),
]


def take(page: Page, url: str, out: Path) -> None:
    for name, action, target in SHOTS:
        page.goto(url)
        expect(page.locator("table.sortable").first).to_be_visible()
        action(page)
        path = out / f"{name}.png"
        if target == "viewport":
            page.screenshot(path=str(path))
        elif target:
            page.locator(target).screenshot(path=str(path))
        else:
            page.screenshot(path=str(path), full_page=True)
        print(f"{path}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("leaderboard_screenshots"), help="folder (%(default)s)")
    parser.add_argument("--exports", type=Path, help="an export root with a leaderboard/index.html")
    parser.add_argument("--minutes", type=int, default=0, help="generated minutes instead of the bundled samples")
    parser.add_argument(
        "--min-values", default="2", help="JAM_LEADERBOARD_MIN_VALUES of the tree it makes (%(default)s)"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        exports = args.exports
        if exports is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="jam-leaderboard-shots-")))
            print(f"processing the logs (jam-etl run, JAM_LEADERBOARD_MIN_VALUES={args.min_values})...", flush=True)
            os.environ["JAM_LEADERBOARD_MIN_VALUES"] = args.min_values
            exports = Path(prepare_instance(root, args.minutes)["JAM_EXPORT_DIR"])
        index = exports / "leaderboard" / "index.html"
        if not index.is_file():
            parser.error(f"no page at {index}: run `make run` first, or leave out --exports")
        browser = stack.enter_context(chromium())
        context = browser.new_context(viewport=VIEWPORT)
        refused: list[str] = []

        def refuse(route: Route) -> None:
            if route.request.url.startswith("file://"):
                route.continue_()
            else:
                refused.append(route.request.url)
                route.abort()

        context.route("**/*", refuse)
        page = context.new_page()
        errors = watch_console(page)
        take(page, index.resolve().as_uri(), args.out)
    for problem in [f"refused request: {u}" for u in refused] + errors:
        print(problem, file=sys.stderr)
    return 1 if refused or errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
