"""The Dagster UI as an operator sees it, in Chromium, over the bundled samples processed by `jam-etl run`
and served by `dagster dev`: what it shows today and must go on showing (browser.py has the helpers)."""

import re

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
    choose_partitions,
    latest_check_execution,
    launch,
    lineage_shows,
    listed_partitions,
    open_asset,
    open_check,
    open_materialize_dialog,
    open_sensor,
    sensor_running,
    time_to_content,
    wait_for_run,
)

pytest_plugins = ["jam_assets_tests.browser"]

SAMPLE_KEYS = ["2025/04/23/0600", "2025/04/23/0956", "2025/04/23/2333", "2025/04/24/2339", "2025/04/24/2340"]


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
    # A JSON value on the overview is shown in full, pretty-printed (behind "[Show JSON]" on a check).
    assert re.match(r'^\{\n  "', shown["lines_by_msg_type"]), shown["lines_by_msg_type"]
    assert console_errors == []


def test_a_table_shows_its_row_count_and_checks(page, console_errors):
    open_asset(page, "blocks")
    assert asset_row_count(page) > 0
    assert "dagster/row_count" not in asset_page_metadata(page)
    open_check(page, "blocks", "time_in_window")
    assert asset_checks(page).keys() == {"hex_formats", "elapsed_units", "time_in_window"}
    latest = latest_check_execution(page)
    # One evaluation for the whole range run of `jam-etl run`, with no partition.
    assert latest["Evaluation result"] == "Passed"
    assert latest["Partition"] == "—"
    assert latest["headline"].startswith("every line within its minute")
    assert console_errors == []


def test_materialize_on_raw_log_runs_raw_log_alone_and_its_lineage_offers_every_table(page, ui, console_errors):
    # Last in the module: it adds a run (raw_log of the first minute file) to the shared instance.
    open_asset(page, schema.RAW_LOG)
    dialog = open_materialize_dialog(page)
    assert dialog.get_by_text("Launch runs to materialize raw_log").is_visible()
    choose_partitions(page, dialog, SAMPLE_KEYS[:1])
    run_id = launch(page, dialog).removeprefix("/runs/")
    # While it runs: raw_log's Lineage tab offers raw_log with every table, all of one multi-asset step.
    open_asset(page, schema.RAW_LOG, "lineage")
    dialog = open_materialize_dialog(page, "Materialize all")
    assert dialog.get_by_text(f"Launch runs to materialize {len(MINUTE_FILE_ASSETS)} assets").is_visible()
    run = wait_for_run(ui.url, run_id)
    assert run["status"] == "SUCCESS"
    assert {"key": "dagster/partition", "value": SAMPLE_KEYS[0]} in run["tags"]
    assert [a["path"] for a in run["assetSelection"]] == [[schema.RAW_LOG]]
    assert {c["assetKey"]["path"][0] for c in run["assetCheckSelection"]} == {schema.RAW_LOG}
    assert console_errors == []
