"""The Dagster UI as an operator sees it, in Chromium, over the bundled samples plus one minute file with
a malformed hash, processed by `jam-etl run` and served by `dagster dev` (browser.py has the helpers).

What the operator must be able to trust: every table and the sensor are there; each minute file shows
what it held (msg_types by name); a table shows its total rows; a check's result belongs to a minute
file and a bad minute stays failed whatever the others do; the check buttons the UI offers work; and
re-running a minute from raw_log reaches the tables."""

import re
import tempfile
import time
from pathlib import Path

import orjson
import pytest

pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extras)")
# browser.py is a plugin of this module (pytest_plugins below) and is imported first, here.
pytest.register_assert_rewrite("jam_assets_tests.browser")

from jam_assets.core import schema  # noqa: E402

from .browser import (  # noqa: E402
    CATALOG,
    MINUTE_FILE_ASSETS,
    asset_checks,
    asset_page_metadata,
    asset_row_count,
    button,
    check_partition_colors,
    check_partition_counts,
    choose_partitions,
    duckdb_reader,
    latest_check_execution,
    launch,
    lineage_shows,
    listed_partitions,
    open_asset,
    open_check,
    open_check_partitions,
    open_materialize_dialog,
    open_sensor,
    runs,
    sensor_running,
    time_to_content,
    ui_instance,
    wait_for_run,
)
from .helpers import sample_json  # noqa: E402

pytestmark = pytest.mark.slow
pytest_plugins = ["jam_assets_tests.browser"]

BAD_MINUTE = "2025/04/23/0957"  # one block whose parent hash is malformed
SAMPLE_KEYS = [
    "2025/04/23/0600",
    "2025/04/23/0956",
    BAD_MINUTE,
    "2025/04/23/2333",
    "2025/04/24/2339",
    "2025/04/24/2340",
]


def bad_minute() -> bytes:
    line = sample_json("128")
    line["time"] = "2025-04-23T09:57:03.5Z"
    line["json_encoded"]["header"]["parent"] = "0xabc"
    return orjson.dumps(line) + b"\n"


@pytest.fixture(scope="module")
def ui():
    with tempfile.TemporaryDirectory(prefix="jam-ui-") as root:
        with ui_instance(Path(root), extra={BAD_MINUTE: bad_minute()}) as instance:
            yield instance


def test_catalog_and_lineage_show_raw_log_and_the_tables_and_the_sensor_runs(page, console_errors):
    time_to_content(page, CATALOG)  # waits for a link to each of raw_log and the 12 tables
    open_asset(page, schema.RAW_LOG, "lineage")
    assert lineage_shows(page) == set(MINUTE_FILE_ASSETS)
    open_sensor(page)
    assert sensor_running(page)
    assert console_errors == []


def test_raw_log_lists_every_minute_file_with_its_metadata(page, console_errors):
    open_asset(page, schema.RAW_LOG, "partitions")
    assert listed_partitions(page) == SAMPLE_KEYS
    open_asset(page, schema.RAW_LOG)
    shown = asset_page_metadata(page)
    assert {"path", "bytes", "lines", "rejected_lines", "lines_by_msg_type", "sha256"} <= set(shown)
    # The latest minute file (2025/04/24/2340), its msg_types by name, as pretty-printed JSON.
    assert re.match(r'^\{\n  "', shown["lines_by_msg_type"]), shown["lines_by_msg_type"]
    by_type = orjson.loads(shown["lines_by_msg_type"])
    assert by_type and all(re.fullmatch(r"[a-z][a-z ]* \(\d+\)|unreadable", k) for k in by_type), by_type
    assert console_errors == []


def test_a_table_shows_its_total_rows_and_its_checks_per_minute_file(page, ui, console_errors):
    open_asset(page, "blocks")
    with duckdb_reader(ui.exports / "jam.duckdb") as conn:
        (total,) = conn.execute("SELECT count(*) FROM blocks").fetchone()
    assert asset_row_count(page) == total > 1  # the table's rows, not the last minute's
    assert "dagster/row_count" not in asset_page_metadata(page)

    # The checks list: hex_formats failed (in one minute file), the others passed everywhere.
    open_check(page, "blocks", "time_in_window")
    assert {name: c.status for name, c in asset_checks(page).items()} == {
        "elapsed_units": "Succeeded",
        "hex_formats": "Failed",
        "time_in_window": "Succeeded",
    }
    latest = latest_check_execution(page)
    assert latest["Evaluation result"] == "Passed"
    assert latest["Partition"] in SAMPLE_KEYS  # a result belongs to a minute file

    # Per minute file: the bad one failed, every other passed.
    open_check_partitions(page, "blocks", "hex_formats")
    assert check_partition_counts(page) == {
        "Execution Failed": 0,
        "Failed": 1,
        "In Progress": 0,
        "Missing": 0,
        "Skipped": 0,
        "Passed": len(SAMPLE_KEYS) - 1,
    }
    assert check_partition_colors(page) == {k: "red" if k == BAD_MINUTE else "green" for k in SAMPLE_KEYS}
    assert console_errors == []


def test_the_check_buttons_the_ui_offers_work(page, ui, console_errors):
    """Execute on one partitioned check is not offered (disabled); "Execute all" checks the newest minute
    file and records its results there, and the bad minute stays failed."""
    open_check(page, "blocks", "hex_formats")
    assert button(page, "Execute").last.is_disabled()
    button(page, "Execute all").first.click()
    link = page.get_by_role("region", name=re.compile("Notifications")).get_by_role("link", name="View")
    run = wait_for_run(ui.url, (link.get_attribute("href") or "").removeprefix("/runs/"))
    assert run["status"] == "SUCCESS"
    assert {c["name"] for c in run["assetCheckSelection"]} == {"hex_formats", "elapsed_units", "time_in_window"}

    open_check(page, "blocks", "hex_formats")
    latest = latest_check_execution(page)
    assert (latest["Evaluation result"], latest["Partition"]) == ("Passed", SAMPLE_KEYS[-1])
    open_check_partitions(page, "blocks", "hex_formats")
    assert check_partition_counts(page)["Failed"] == 1
    assert check_partition_colors(page)[BAD_MINUTE] == "red"
    assert console_errors == []


def test_materialize_on_raw_log_is_followed_by_the_tables_of_that_minute(page, ui, console_errors):
    # Last in the module: it adds runs (raw_log of the first minute file, then its tables) to the instance.
    open_asset(page, schema.RAW_LOG)
    dialog = open_materialize_dialog(page)
    assert dialog.get_by_text("Launch runs to materialize raw_log").is_visible()
    choose_partitions(page, dialog, SAMPLE_KEYS[:1])
    run_id = launch(page, dialog).removeprefix("/runs/")
    run = wait_for_run(ui.url, run_id)
    assert run["status"] == "SUCCESS"
    assert {"key": "dagster/partition", "value": SAMPLE_KEYS[0]} in run["tags"]
    assert [a["path"] for a in run["assetSelection"]] == [[schema.RAW_LOG]]

    # The tables_follow_raw_log automation (every 30 s) then requests exactly that minute's tables.
    def followed() -> dict | None:
        for r in runs(ui.url):
            tags = {t["key"]: t["value"] for t in r["tags"]}
            if r["runId"] != run_id and tags.get("dagster/partition") == SAMPLE_KEYS[0] and r["assetSelection"]:
                return r
        return None

    deadline = time.monotonic() + 150
    while (follow := followed()) is None and time.monotonic() < deadline:
        time.sleep(2)
    assert follow is not None, "no run of the tables followed raw_log within 150 s"
    follow = wait_for_run(ui.url, follow["runId"])
    assert follow["status"] == "SUCCESS"
    assert sorted(a["path"][0] for a in follow["assetSelection"]) == sorted(schema.ALL_TABLES)
    assert console_errors == []
