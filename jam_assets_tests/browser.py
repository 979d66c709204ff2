"""The Dagster UI in a real browser: a processed instance served by `dagster dev`, Debian's Chromium
driven by Playwright, and helpers that wait for what an operator looks at (never for a fixed time).

In a test module (the fixtures are module-scoped: one server and one browser for the module):

    pytest_plugins = ["jam_assets_tests.browser"]

    def test_blocks_row_count(page, console_errors):
        open_asset(page, "blocks")
        assert asset_page_metadata(page)["dagster/row_count"] == "10"
        assert console_errors == []

Fixtures: `ui` (a `UiInstance`: url, home, logs, exports, the server's log, the env), `ui_url`,
`browser`, `page` (a context of its own per test, based at the server's URL, so `page.goto("/assets")`
works) and `console_errors` (that page's console errors and uncaught exceptions, as text).

Outside pytest (scripts/ui_screenshots.py, the benchmarks): `ui_instance` or `prepare_instance` with
`serve_ui`, then `chromium`, `new_page`, and `VIEWS` with `time_to_content` (or `measure`).

Every wait is on content: `expect(...)` retries until its timeout (CONTENT_TIMEOUT_MS, set for all
`expect` calls made after importing this module, the tests' own too).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import duckdb
import pytest
import requests
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from jam_assets.core import schema
from jam_assets.core.generator import TINY, write_minutes
from jam_assets.devserver import dagster_dev

from .helpers import free_port

PROJECT = Path(__file__).resolve().parents[1]
SAMPLE_LOGS = PROJECT / "jam_assets" / "sample_logs"
MINUTE_FILE_ASSETS = (schema.RAW_LOG, *schema.ALL_TABLES)
CHROMIUM = Path("/usr/bin/chromium")  # Debian's (scripts/ensure-chromium); Playwright's downloads are never used
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium keeps calling Google's services, and on a closed network floods it with
    # refused connections.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1600, "height": 1000}
# On 127.0.0.1 the UI asks a fresh browser to join the Dagster community, in a modal over the page
# (1 s after load); its "Skip" stores this key in localStorage.
SKIP_COMMUNITY_POPUP = "localStorage.setItem('communityNux', JSON.stringify('1'))"
MINUTE_KEY = re.compile(r"^\d{4}/\d{2}/\d{2}/\d{4}$")
# Middle-truncated names hold their text twice (shown and measured), so a key is searched, not matched.
MINUTE_KEY_IN_TEXT = re.compile(r"\d{4}/\d{2}/\d{2}/\d{4}")
# Content shows once the code location is loaded and the GraphQL queries have answered: a few seconds
# on the sample instance, far more at 86,400 partitions.
CONTENT_TIMEOUT_MS = 60_000
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


def prepare_instance(root: Path, minutes: int = 0, extra: Mapping[str, bytes] | None = None) -> dict[str, str]:
    """A Dagster home, a log tree and an export folder under `root`, processed by `jam-etl run`; returns
    the environment that points at them.

    The log tree is a copy of the bundled samples (five minute files of April 2025; a copy, so that a
    test can drop a minute file in it for the sensor), or with `minutes` that many generated minutes of
    the tiny testnet from 2025-04-23 06:00; `extra` adds minute files ({key: bytes}). `jam-etl run`
    prepares the home's dagster.yaml, as `make run`.
    """
    home, logs, exports = root / "home", root / "logs", root / "exports"
    home.mkdir(parents=True)
    if minutes:
        write_minutes(logs, TINY, datetime(2025, 4, 23, 6, 0, tzinfo=UTC), minutes)
    else:
        shutil.copytree(SAMPLE_LOGS, logs)
    for key, data in (extra or {}).items():
        (logs / f"{key}.log").parent.mkdir(parents=True, exist_ok=True)
        (logs / f"{key}.log").write_bytes(data)
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
def ui_instance(root: Path, minutes: int = 0, extra: Mapping[str, bytes] | None = None) -> Iterator[UiInstance]:
    """`prepare_instance` under `root`, served by `dagster dev` while the context lasts."""
    env = prepare_instance(root, minutes, extra)
    with serve_ui(env, root / "dagster-dev.log") as url:
        yield UiInstance(url, root / "home", root / "logs", root / "exports", root / "dagster-dev.log", env)


def graphql(url: str, query: str, variables: Mapping[str, object] | None = None) -> dict:
    """The `data` of a GraphQL query to the server at `url` (what the UI itself asks)."""
    answer = requests.post(f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
    answer.raise_for_status()
    body = answer.json()
    if body.get("errors"):
        raise RuntimeError(f"GraphQL errors: {body['errors']}")
    return body["data"]


RUN_QUERY = """
query($id: ID!) { runOrError(runId: $id) { ... on Run {
  status tags { key value } assetSelection { path } assetCheckSelection { assetKey { path } name } } } }
"""
RUNS_QUERY = """
query { runsOrError(limit: 50) { ... on Runs { results {
  runId status tags { key value } assetSelection { path } } } } }
"""


def runs(url: str) -> list[dict]:
    """The newest runs (up to 50), newest first: runId, status, tags, assetSelection (GraphQL names)."""
    return graphql(url, RUNS_QUERY)["runsOrError"]["results"]


FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


@contextmanager
def duckdb_reader(path: Path, timeout: float = 120) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to the export root's DuckDB file, once no run holds its write lock
    (the daemon's runs, e.g. the daily reports the sensor requests after dagster dev starts)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = duckdb.connect(str(path), read_only=True)
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    with conn:
        yield conn


def wait_for_run(url: str, run_id: str, timeout: float = 120) -> dict:
    """The run, once it has finished: status, tags, assetSelection, assetCheckSelection (GraphQL names)."""
    deadline = time.monotonic() + timeout
    while True:
        run = graphql(url, RUN_QUERY, {"id": run_id})["runOrError"]
        if run.get("status") in FINISHED:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {run.get('status')} after {timeout:.0f}s")
        time.sleep(0.5)


# ---------------------------------------------------------------------------------------------
# The browser


@contextmanager
def chromium(headless: bool = True) -> Iterator[Browser]:
    """Debian's Chromium under Playwright, each launch with a fresh, empty profile (Playwright makes a
    temporary one and removes it on close)."""
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing: run scripts/ensure-chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=headless, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Browser, base_url: str, viewport: Mapping[str, int] = VIEWPORT) -> Page:
    """A page in a browser context of its own (no cookies or local storage shared with other pages)."""
    context = browser.new_context(base_url=base_url, viewport=dict(viewport))
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
# Views, each with what shows that its content is there, and the time it takes


@dataclass(frozen=True)
class View:
    name: str
    path: str
    ready: Callable[[Page], None]


def time_to_content(page: Page, view: View) -> float:
    """Go to `view`; the seconds from asking for it until its content shows."""
    started = time.monotonic()
    page.goto(view.path, wait_until="commit")
    view.ready(page)
    return time.monotonic() - started


def button(within: Page | Locator, label: str) -> Locator:
    """Buttons whose text starts with `label` (their accessible names start with their icon's name)."""
    return within.get_by_role("button").filter(has_text=re.compile(f"^{re.escape(label)}"))


def metadata_table(page: Page) -> Locator:
    """The Metadata section of an asset's overview: the latest materialization's metadata."""
    return page.locator("table").filter(has=page.locator("thead", has_text="Timestamp"))


def partition_rows(page: Page) -> Locator:
    """The rows of a partition list (an asset's or a partitioned check's Partitions tab), each titled with
    its key. The list is virtualized: only the rows on screen exist."""
    return page.locator("div[title]").filter(has_text=MINUTE_KEY_IN_TEXT)


def _asset_header(page: Page, asset: str) -> None:
    # The breadcrumb shows the key at once; the tabs come with the asset's definition.
    expect(page.get_by_role("listitem").filter(has_text=re.compile(f"^{re.escape(asset)}"))).to_be_visible()
    # .first: a check's detail panel has an Overview tab of its own, after the asset's.
    expect(page.get_by_role("tab", name="Overview", exact=True).first).to_be_visible()


def _overview_ready(page: Page) -> None:
    # The table is drawn once the latest materialization's metadata has arrived.
    expect(metadata_table(page)).to_be_visible()


def _partitions_ready(page: Page) -> None:
    expect(page.get_by_text(re.compile(r"^[\d,]+ Partitions? Selected$"))).to_be_visible()
    expect(partition_rows(page).first).to_be_visible()


def _events_ready(page: Page) -> None:
    expect(page.get_by_text("Materialized in run").first).to_be_visible()


def _checks_ready(page: Page) -> None:
    expect(page.get_by_text(re.compile(r"^Checks \(\d+\)$"))).to_be_visible()
    expect(page.get_by_text("Latest execution", exact=True)).to_be_visible()


def _lineage_ready(page: Page) -> None:
    # The graph's own button, "Materialize all…", comes once the neighbours are laid out.
    expect(button(page, "Materialize all")).to_be_visible()


TAB_READY: dict[str, Callable[[Page], None]] = {
    "overview": _overview_ready,
    "partitions": _partitions_ready,
    "events": _events_ready,
    "checks": _checks_ready,
    "lineage": _lineage_ready,
}


def asset_view(asset: str, tab: str = "overview", name: str = "") -> View:
    """An asset's page; `tab`: overview, partitions, events, checks or lineage."""
    query = "" if tab == "overview" else f"?view={tab}"

    def ready(page: Page) -> None:
        _asset_header(page, asset)
        TAB_READY[tab](page)

    return View(name or (asset if tab == "overview" else f"{asset}-{tab}"), f"/assets/{asset}{query}", ready)


def check_view(asset: str, check: str) -> View:
    def ready(page: Page) -> None:
        _asset_header(page, asset)
        _checks_ready(page)
        expect(page.get_by_text(check, exact=True).last).to_be_visible()

    return View(f"{asset}-{check}", f"/assets/{asset}?view=checks&checkDetail={check}", ready)


def _catalog_ready(page: Page) -> None:
    for asset in MINUTE_FILE_ASSETS:
        expect(page.locator(f'a[href="/assets/{asset}"]')).to_be_visible()


def _lineage_groups_ready(page: Page) -> None:
    # The global lineage starts with each group folded into one node: raw, tables, rejected.
    expect(page.get_by_text(f"{len(schema.TABLES)} assets", exact=False).first).to_be_visible()


def _sensor_switch(page: Page) -> Locator:
    # The Running row's switch: a hidden checkbox under a drawn toggle.
    return page.get_by_role("row", name="Running").get_by_role("checkbox")


def _sensor_ready(page: Page) -> None:
    expect(page.get_by_text("Latest tick", exact=True)).to_be_visible()
    expect(_sensor_switch(page)).to_be_attached()


CATALOG = View("catalog", "/assets", _catalog_ready)
GLOBAL_LINEAGE = View("lineage", "/asset-groups", _lineage_groups_ready)
SENSOR = View("sensor", "/locations/jam_assets/sensors/minute_file_sensor", _sensor_ready)

# The views the benchmark follows: the ones whose queries grow with the number of partitions.
VIEWS = (
    asset_view(schema.RAW_LOG),
    asset_view(schema.RAW_LOG, "partitions"),
    asset_view("blocks"),
    asset_view("blocks", "checks"),
)


def warm_up(page: Page) -> None:
    """Load the app once, so that later times measure the instance's data, not the first script download."""
    time_to_content(page, CATALOG)


def measure(page: Page, views: Sequence[View] = VIEWS, repeat: int = 1) -> dict[str, list[float]]:
    """{view name: seconds to content, per repetition}, after a warm-up."""
    warm_up(page)
    return {v.name: [time_to_content(page, v) for _ in range(repeat)] for v in views}


# ---------------------------------------------------------------------------------------------
# Helpers for tests: go somewhere, read what is shown


def open_asset(page: Page, asset: str, tab: str = "overview") -> float:
    """Go to an asset's page (`tab`: overview, partitions, events, checks, lineage) and wait for its
    content; returns the seconds it took."""
    return time_to_content(page, asset_view(asset, tab))


def open_check(page: Page, asset: str, check: str) -> float:
    """Go to one check on an asset's Checks tab and wait for its latest execution."""
    return time_to_content(page, check_view(asset, check))


def open_sensor(page: Page) -> float:
    return time_to_content(page, SENSOR)


def asset_page_metadata(page: Page) -> dict[str, str]:
    """{key: value as shown} of the metadata table on the open asset overview ("[Show JSON]" and the like
    for the values shown behind a button)."""
    # Direct children only: a table value (MetadataValue.table) renders a table inside its cell.
    rows = metadata_table(page).locator(":scope > tbody > tr").all()
    cells = [r.locator(":scope > td") for r in rows]
    return {c.nth(0).inner_text().strip(): c.nth(2).inner_text().strip() for c in cells}


def metadata_value(page: Page, key: str) -> Locator:
    """The value cell of entry `key` in the metadata table of the open asset overview."""
    return metadata_table(page).locator(f"xpath=./tbody/tr[td[1][normalize-space(.)='{key}']]/td[3]")


def show_markdown(page: Page, key: str) -> Locator:
    """The rendered Markdown of metadata entry `key` (MetadataValue.md) on the open asset overview, once
    it shows. The UI renders a value under 1,000 characters in its cell, and a longer one only in a
    dialog that its "[Show Markdown]" button opens (this opens it); either way its renderer is loaded
    after the page, so the cell is empty for a moment."""
    cell = metadata_value(page, key)
    expect(cell).to_be_visible()
    more = cell.get_by_text("[Show Markdown]", exact=True)
    if more.count() == 0:
        box = cell
    else:
        more.click()
        box = page.get_by_role("dialog").filter(has_text=key)
    rendered = box.locator(".dagster-markdown")
    expect(rendered.locator(":scope > *").first).to_be_attached()  # a paragraph, a table...
    return rendered


def asset_row_count(page: Page) -> int:
    """The "Row count" of the open asset overview's Status: `dagster/row_count` of the latest
    materialization (the overview's metadata table leaves that key out, and dagster/column_schema)."""
    tag = page.get_by_text("Row count", exact=True).locator("xpath=..")
    expect(tag).to_have_text(re.compile(r"Row count\s*[\d,]+"))
    return int(tag.inner_text().removeprefix("Row count").strip().replace(",", ""))


def listed_partitions(page: Page) -> list[str]:
    """The keys in the open partition list, in its order (the ones rendered: the list is virtualized)."""
    titles = partition_rows(page).evaluate_all("els => els.map(e => e.title)")
    return list(dict.fromkeys(t for t in titles if MINUTE_KEY.match(t)))


def partition_row(page: Page, key: str) -> Locator:
    # A partitioned check's tab also shows the selected keys as tags, above the list.
    return page.locator(f'div[title="{key}"]').last


class ListedCheck(NamedTuple):
    status: str  # Succeeded, Failed, ...
    icon: str  # check_circle; warning_outline for a failed WARN check


def asset_checks(page: Page) -> dict[str, ListedCheck]:
    """{check name: status} from the list on the left of the open Checks tab."""
    rows = page.locator("div[title]").evaluate_all(
        """els => els
            .filter(e => e.nextElementSibling && e.nextElementSibling.tagName === 'SPAN')
            .map(e => [e.title, e.nextElementSibling.innerText,
                       e.closest('span').parentElement.querySelector('[role=img]').getAttribute('aria-label')])"""
    )
    return {name: ListedCheck(status.strip(), icon) for name, status, icon in rows}


def latest_check_execution(page: Page) -> dict[str, str]:
    """The check open on the Checks tab: the values under Evaluation result, Timestamp, Target
    materialization and Partition ("—" when the evaluation has none), then its metadata as shown."""
    row = page.get_by_text("Evaluation result", exact=True).locator("xpath=../..")
    # One column per label (a heading, then the value); Timestamp and the others only when known.
    columns = dict(text.split("\n", 1) for text in row.locator(":scope > div").all_inner_texts())
    values = {label.strip(): text.strip() for label, text in columns.items()}
    for entry in row.locator("xpath=..").locator("table tr").all():
        key, value = entry.locator("td").all_inner_texts()
        values[key.strip()] = value.strip()
    return values


def open_check_partitions(page: Page, asset: str, check: str) -> None:
    """Open one check's Partitions tab (a partitioned check's result per minute file)."""
    open_check(page, asset, check)
    page.get_by_role("tab", name="Partitions").last.click()
    expect(page.get_by_text(re.compile(r"^Passed \(\d+\)$"))).to_be_visible()


def check_partition_counts(page: Page) -> dict[str, int]:
    """{status: minute files} from the open check Partitions tab's filters: Passed, Failed, Skipped, ..."""
    texts = page.get_by_text(
        re.compile(r"^(Execution Failed|Failed|In Progress|Missing|Skipped|Passed) \(\d+\)$")
    ).all_inner_texts()
    return {t.rsplit(" (", 1)[0]: int(t.rsplit(" (", 1)[1].rstrip(")")) for t in texts}


def check_partition_colors(page: Page) -> dict[str, str]:
    """{minute file: the colour of its dot} in the open check Partitions tab's list (green: passed,
    red: failed, yellow: a failed WARN check); the rows on screen (the list is virtualized)."""
    pairs = partition_rows(page).evaluate_all(
        """els => els.map(e => {
            const dot = e.parentElement.nextElementSibling;
            const color = dot ? dot.style.backgroundColor : '';
            return [e.title, (color.match(/--color-accent-(\\w+)/) || ['', ''])[1]];
        })"""
    )
    return {key: color for key, color in pairs if MINUTE_KEY.match(key)}


def lineage_shows(page: Page, names: Sequence[str] = MINUTE_FILE_ASSETS) -> set[str]:
    """Which of `names` the open lineage graph draws (an asset's Lineage tab, or the global one unfolded).
    Long names are drawn cut in the middle ("validato…tatistics"), with no full text behind them."""
    texts = page.locator("svg foreignObject").evaluate_all(
        "els => els.flatMap(e => [...e.querySelectorAll('*')].filter(c => !c.children.length).map(c => c.textContent))"
    )
    labels = [t.strip() for t in texts if t.strip()]
    cut = [label.split("…") for label in labels if label.count("…") == 1]
    return {
        n
        for n in names
        if n in labels or any(n.startswith(a) and n.endswith(b) and len(n) > len(a + b) for a, b in cut)
    }


def sensor_running(page: Page) -> bool:
    """Whether the open sensor page's Running switch is on."""
    return _sensor_switch(page).is_checked()


def open_materialize_dialog(page: Page, label: str = "Materialize") -> Locator:
    """Click the open page's button starting with `label` ("Materialize…" on an asset page, "Materialize
    all…" on its Lineage tab, "Materialize selected…" in the catalog); returns the launch dialog."""
    button(page, label).first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("Partition selection")).to_be_visible()
    return dialog


def choose_partitions(page: Page, dialog: Locator, keys: Sequence[str]) -> None:
    """Tick `keys` in the dialog's partition picker (Custom), then close the picker."""
    dialog.get_by_text("Select a partition or create one").click()
    for key in keys:
        page.get_by_role("menuitem", name=key).click()
    dialog.get_by_text(re.compile("^Launch runs to materialize")).click()  # closes the picker, not the dialog
    expect(dialog.get_by_text(f"{len(keys)} partition{'s' if len(keys) > 1 else ''}", exact=True)).to_be_visible()


def launch(page: Page, dialog: Locator) -> str:
    """Press the dialog's Launch button ("Launch 1 run" for one partition, "Launch backfill" for more);
    returns the toast's link: /runs/<run id> or /runs/b/<backfill id>."""
    button(dialog, "Launch").click()
    link = page.get_by_role("region", name=re.compile("Notifications")).get_by_role("link", name="View")
    expect(link).to_be_visible()
    return link.get_attribute("href") or ""


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
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: run scripts/ensure-chromium")
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
