"""The Dagster UI in a real browser: a processed instance served by `dagster dev`, Chromium driven by
Playwright, and helpers that wait for what an operator looks at (never for a fixed time).

Pytest (module-scoped, so one server and one browser serve a whole test module):

    pytest_plugins = ["jam_assets_tests.browser"]

    def test_blocks_row_count(page, console_errors):
        open_asset(page, "blocks")
        assert asset_page_metadata(page)  # ... and no console error:
        assert console_errors == []

Fixtures: `ui` (a `UiInstance`: url, home, logs, exports, the server's log), `ui_url`, `browser`,
`page` (a fresh context per test, its base URL the server's, so `page.goto("/assets")` works) and
`console_errors` (the page's console errors and uncaught exceptions, as text).

Outside pytest (scripts/ui_screenshots.py, bench/): `prepare_instance`, `serve_ui`, `chromium`,
`new_page`, and `VIEWS` with `time_to_content`.

Chromium is Debian's (`scripts/ensure-chromium`): Playwright's own browser downloads are not used.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from jam_assets.core import schema
from jam_assets.core.generator import TINY, write_minutes
from jam_assets.devserver import dagster_dev

PROJECT = Path(__file__).resolve().parents[1]
SAMPLE_LOGS = PROJECT / "jam_assets" / "sample_logs"
CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps trying to reach Google's services, and on a
# machine without outside access floods it with refused connections.
CHROMIUM_ARGS = [
    "--no-sandbox",  # we run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1600, "height": 1000}
# The UI asks a fresh browser, on 127.0.0.1, to join the Dagster community, in a modal over the page
# (shown 1 s after load); its "Skip" stores this key in localStorage.
SKIP_COMMUNITY_POPUP = "localStorage.setItem('communityNux', JSON.stringify('1'))"
TABLE_ASSETS = tuple(schema.ALL_TABLES)
MINUTE_KEY = re.compile(r"^\d{4}/\d{2}/\d{2}/\d{4}$")
# Content first shows after the code location has loaded and the GraphQL queries have answered: a few
# seconds on a small instance, far more at 86,400 partitions.
CONTENT_TIMEOUT_MS = 60_000
# For `expect(...)` everywhere, the helpers' waits and the tests' own assertions alike.
expect.set_options(timeout=CONTENT_TIMEOUT_MS)


# ---------------------------------------------------------------------------------------------
# The instance and its server


@dataclass(frozen=True)
class UiInstance:
    url: str
    home: Path
    logs: Path
    exports: Path
    server_log: Path
    env: Mapping[str, str]


def prepare_instance(root: Path, minutes: int = 0) -> dict[str, str]:
    """A Dagster home, log tree and export folder under `root`, processed by `jam-etl run`; returns the env.

    The log tree is a copy of the bundled samples (five minute files of April 2025), or with `minutes`
    that many generated minutes of the tiny testnet from 2025-04-23 06:00; a copy, so that a test can
    drop a minute file in it for the sensor. `jam-etl run` prepares the home's dagster.yaml from the
    project's, as `make run` does.
    """
    home, logs, exports = root / "home", root / "logs", root / "exports"
    home.mkdir(parents=True)
    if minutes:
        write_minutes(logs, TINY, datetime(2025, 4, 23, 6, 0, tzinfo=timezone.utc), minutes)
    else:
        shutil.copytree(SAMPLE_LOGS, logs)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "JAM_LOG_DIR": str(logs),
        "JAM_EXPORT_DIR": str(exports),
        "JAM_GRACE_SECONDS": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "jam_assets.cli", "run"], cwd=PROJECT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"jam-etl run failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/server_info", timeout=2).ok
    except requests.RequestException:
        return False


@contextmanager
def serve_ui(env: Mapping[str, str], server_log: Path, timeout: float = 120) -> Iterator[str]:
    """`dagster dev` (webserver and daemon) with `env` on a free port; yields its URL once it answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with dagster_dev(env, port, server_log) as proc:
        deadline = time.monotonic() + timeout
        while not _answers(url):
            if proc.poll() is not None:
                raise RuntimeError(f"dagster dev exited ({proc.returncode}); see {server_log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"dagster dev did not answer on {url} within {timeout:.0f}s; see {server_log}")
            time.sleep(0.25)
        yield url


@contextmanager
def ui_instance(root: Path, minutes: int = 0) -> Iterator[UiInstance]:
    env = prepare_instance(root, minutes)
    with serve_ui(env, root / "dagster-dev.log") as url:
        yield UiInstance(url, root / "home", root / "logs", root / "exports", root / "dagster-dev.log", env)


# ---------------------------------------------------------------------------------------------
# The browser


@contextmanager
def chromium(headless: bool = True) -> Iterator[Browser]:
    """Debian's Chromium under Playwright, with a fresh, empty profile (Playwright makes a temporary one)."""
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing: run scripts/ensure-chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=headless, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Browser, base_url: str) -> Page:
    """A page in a context of its own (no cookies or local storage shared with other pages)."""
    context = browser.new_context(base_url=base_url, viewport=VIEWPORT)
    context.add_init_script(SKIP_COMMUNITY_POPUP)
    context.set_default_timeout(CONTENT_TIMEOUT_MS)
    return context.new_page()


def watch_console(page: Page) -> list[str]:
    """A list that fills with the page's console errors and uncaught exceptions from now on."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    return errors


# ---------------------------------------------------------------------------------------------
# Pages, and what shows that each has its content


def wait_for_asset_header(page: Page, asset: str) -> None:
    # The breadcrumb shows the key at once; the tabs come with the asset's definition.
    expect(page.get_by_role("listitem").filter(has_text=re.compile(f"^{re.escape(asset)}"))).to_be_visible()
    expect(page.get_by_role("tab", name="Overview", exact=True)).to_be_visible()


def open_asset(page: Page, asset: str, tab: str = "overview") -> None:
    """Go to an asset's page (`tab`: overview, partitions, events, checks, lineage) and wait for its content."""
    view = "" if tab == "overview" else f"?view={tab}"
    page.goto(f"/assets/{asset}{view}")
    wait_for_asset_header(page, asset)
    TAB_READY[tab](page)


def _overview_ready(page: Page) -> None:
    # The status section's "Latest materialization" gets its partition tag once the data is in.
    expect(page.get_by_text("Latest materialization", exact=True).first).to_be_visible()
    expect(metadata_table(page)).to_be_visible()


def _partitions_ready(page: Page) -> None:
    expect(page.get_by_text(re.compile(r"^\d+ Partitions? Selected$"))).to_be_visible()
    expect(partition_rows(page).first).to_be_visible()


def _checks_ready(page: Page) -> None:
    expect(page.get_by_text(re.compile(r"^Checks \(\d+\)$"))).to_be_visible()
    expect(page.get_by_text("Latest execution", exact=True)).to_be_visible()


def _events_ready(page: Page) -> None:
    expect(page.get_by_text(re.compile(r"^\d{4}/\d{2}/\d{2}/\d{4}$")).first).to_be_visible()


def _lineage_ready(page: Page) -> None:
    # The graph's own button: "Materialize all…" once the neighbours are laid out.
    expect(page.get_by_role("button", name=re.compile(r"^Materialize all"))).to_be_visible()


TAB_READY: dict[str, Callable[[Page], None]] = {
    "overview": _overview_ready,
    "partitions": _partitions_ready,
    "events": _events_ready,
    "checks": _checks_ready,
    "lineage": _lineage_ready,
}


def metadata_table(page: Page) -> Locator:
    """The Metadata section of an asset's overview (its latest materialization's metadata)."""
    return page.locator("table").filter(has=page.locator("thead", has_text="Timestamp"))


def asset_page_metadata(page: Page) -> dict[str, str]:
    """{key: value as shown} of the metadata table on the open asset overview."""
    rows = metadata_table(page).locator("tbody tr")
    return {r.locator("td").nth(0).inner_text().strip(): r.locator("td").nth(2).inner_text().strip() for r in rows.all()}


def partition_rows(page: Page) -> Locator:
    """The partition list of an asset's Partitions tab (virtualized: only the rows on screen exist)."""
    return page.locator("div[title]").filter(has_text=re.compile(r"^\d{4}/\d{2}/\d{2}/\d{4}$"))


def listed_partitions(page: Page) -> list[str]:
    return [t for t in partition_rows(page).evaluate_all("els => els.map(e => e.title)") if MINUTE_KEY.match(t)]


def asset_checks(page: Page) -> dict[str, str]:
    """{check name: its status line ("Succeeded", "Failed", ...)} on the open Checks tab."""
    listed = page.locator("a[href*='?view=checks&checkDetail=']")
    return {
        a.inner_text().splitlines()[0].strip(): a.inner_text().splitlines()[-1].strip() for a in listed.all()
    }


def latest_check_execution(page: Page) -> dict[str, str]:
    """The "Latest execution" block of the selected check: Evaluation result, Timestamp, ..., Partition."""
    section = page.locator("div").filter(has=page.get_by_text("Evaluation result", exact=True)).last
    labels = ("Evaluation result", "Timestamp", "Target materialization", "Partition")
    values = {}
    for label in labels:
        cell = section.get_by_text(label, exact=True).locator("xpath=..")
        values[label] = cell.inner_text().removeprefix(label).strip()
    return values


def open_graph(page: Page, query: str = "") -> None:
    """The global asset lineage (Lineage in the left bar), optionally filtered by an asset selection."""
    page.goto("/asset-groups" + (f"?asset-selection={query}" if query else ""))
    expect(graph_node(page, schema.RAW_LOG)).to_be_visible()


def graph_node(page: Page, asset: str) -> Locator:
    return page.locator(f"[data-testid='node-{asset}']")


def graph_assets(page: Page) -> set[str]:
    ids = page.locator("[data-testid^='node-']").evaluate_all("els => els.map(e => e.dataset.testid)")
    return {i.removeprefix("node-") for i in ids}


def open_sensor(page: Page, name: str = "minute_file_sensor") -> None:
    page.goto(f"/locations/jam_assets/sensors/{name}")
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    expect(sensor_switch(page)).to_be_visible()


def sensor_switch(page: Page) -> Locator:
    """The running/stopped toggle of the open sensor page."""
    return page.get_by_role("checkbox")


def open_materialize_dialog(page: Page, label: str = "Materialize") -> Locator:
    """Click the open page's Materialize… button (`label`: the start of its text); returns the dialog."""
    page.get_by_role("button", name=re.compile(f"^{re.escape(label)}")).first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("Partition selection")).to_be_visible()
    return dialog


# ---------------------------------------------------------------------------------------------
# Time to content, for scripts/ui_screenshots.py and the benchmarks


@dataclass(frozen=True)
class View:
    name: str
    path: str
    ready: Callable[[Page], None]


def _asset_view(name: str, asset: str, tab: str) -> View:
    view = "" if tab == "overview" else f"?view={tab}"

    def ready(page: Page) -> None:
        wait_for_asset_header(page, asset)
        TAB_READY[tab](page)

    return View(name, f"/assets/{asset}{view}", ready)


# The four views the benchmark follows: they are the ones that grow with the number of partitions.
VIEWS = (
    _asset_view("raw_log", schema.RAW_LOG, "overview"),
    _asset_view("raw_log-partitions", schema.RAW_LOG, "partitions"),
    _asset_view("blocks", "blocks", "overview"),
    _asset_view("blocks-checks", "blocks", "checks"),
)


def time_to_content(page: Page, view: View) -> float:
    """Seconds from asking for `view` until its content shows (the app's scripts already in the cache)."""
    started = time.monotonic()
    page.goto(view.path, wait_until="commit")
    view.ready(page)
    return time.monotonic() - started


def warm_up(page: Page) -> None:
    """Load the app once, so that times measure the instance's data and not the first script download."""
    page.goto("/assets")
    expect(page.get_by_role("link", name=schema.RAW_LOG, exact=True)).to_be_visible()


# ---------------------------------------------------------------------------------------------
# Pytest fixtures


@pytest.fixture(scope="module")
def ui() -> Iterator[UiInstance]:
    with tempfile.TemporaryDirectory(prefix="jam-ui-") as root, ui_instance(Path(root)) as instance:
        yield instance


@pytest.fixture(scope="module")
def ui_url(ui: UiInstance) -> str:
    return ui.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Browser, ui_url: str) -> Iterator[Page]:
    p = new_page(browser, ui_url)
    try:
        yield p
    finally:
        p.context.close()


@pytest.fixture
def console_errors(page: Page) -> list[str]:
    return watch_console(page)
