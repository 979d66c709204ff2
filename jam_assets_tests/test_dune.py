"""Dune uploads against the stand-in (dune_standin.py): rows stored, requests sent, credits spent."""

import hashlib
import logging
import os
import threading
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import orjson
import pytest

from jam_assets.core import schema
from jam_assets.core.minute_files import minute_start_column
from jam_assets.core.staging import export_path, publish
from jam_assets.defs.dune import DuneResource, dune_upload_job
from jam_assets.defs.settings import JamSettings
from jam_assets.sinks.dune import LEDGER_FILE, DuneConfig, Ledger, dune_schema, forget_table, ledger_lock, upload

from .dune_standin import DuneStandIn, FakeClock

KEY = "sk-test-secret-123"
NS = "jamteam"
NOW = datetime(2025, 4, 24, 0, 0, tzinfo=UTC)
LOG = logging.getLogger("dune-test")
A, B = "2025/04/23/0600", "2025/04/23/0601"
CREATE, INSERT = "create", "insert"


def export_row(table: str, minute_file: str, line_no: int, **values) -> dict:
    """A row as the exports carry it, built from schema/<table>.json whatever its columns."""
    sample = {"STRING": f"v{line_no}", "INTEGER": line_no, "TIMESTAMP": minute_start_column(minute_file)}
    row = {c.name: sample[c.type] for c in schema.columns(table)}
    row.update(minute_file=minute_file, line_no=line_no)
    if "codec_encoded" in row:
        row["codec_encoded"] = "0x00"
    row.update(values)
    return row


def publish_rows(root, table: str, minute_file: str, rows: list[dict]) -> None:
    """Publish an export the way the IO manager does: a staged file renamed into place."""
    staged = root / ".staging" / f"{table}-{time.monotonic_ns()}.jsonl"
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    publish(staged, export_path(root, table, minute_file))


def in_dune(row: dict, table: str, uploaded_at: str) -> dict:
    """What the Dune table holds for an export row: its Dune columns, in order, and the run's stamp."""
    return {c["name"]: row.get(c["name"], uploaded_at) for c in dune_schema(table, include_codec=False)}


def config(url: str, **kw) -> DuneConfig:
    kw.setdefault("max_requests_per_minute", 6000)
    return DuneConfig(api_key=KEY, namespace=NS, base_url=url, **kw)


def run(root, cfg: DuneConfig, clock: FakeClock, now: datetime = NOW):
    return upload(root, cfg, LOG, now=now, settle_seconds=3600, sleep=clock.sleep, clock=clock.now)


def age_day_folders(root) -> None:
    """Make every day folder look published a day ago, so a run can mark it done (see RACY_NS)."""
    past = time.time() - 86400
    for day in root.glob("*/*/*/*"):
        if day.is_dir():
            os.utime(day, (past, past))


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def root(tmp_path):
    return tmp_path / "exports"


@pytest.fixture
def dune(clock):
    with DuneStandIn(KEY, clock=clock.now, requests_per_minute=None) as standin:
        yield standin


def test_rows_tables_and_requests(root, dune, clock):
    assurances = {k: [export_row("assurances", k, n) for n in (1, 2)] for k in (A, B)}
    for k, rows in assurances.items():
        publish_rows(root, "assurances", k, rows)
    blocks = [export_row("blocks", A, 1)]
    publish_rows(root, "blocks", A, blocks)
    publish_rows(root, "tickets", A, [])  # the minute gave tickets no rows

    report = run(root, config(dune.url), clock)

    assert report.failed == {}
    stamp = report.uploaded_at
    assert dune.rows(NS, "jam_assurances") == [in_dune(r, "assurances", stamp) for k in (A, B) for r in assurances[k]]
    assert dune.rows(NS, "jam_blocks") == [in_dune(r, "blocks", stamp) for r in blocks]
    assert {name for _, name in dune.tables} == {"jam_assurances", "jam_blocks", "jam_upload_manifest"}
    assert dune.tables[(NS, "jam_assurances")].columns == dune_schema("assurances", include_codec=False)
    assert all(t.is_private for t in dune.tables.values())
    assert not any(c["name"] == "codec_encoded" for c in dune.tables[(NS, "jam_blocks")].columns)
    # One create per table with rows plus the manifest, one insert per table plus the manifest's.
    assert len(dune.requests(CREATE)) == 3 and len(dune.requests(INSERT)) == 3
    assert report.created == ["jam_blocks", "jam_assurances", "jam_upload_manifest"]
    inserts = dune.requests(INSERT)
    assert all(
        r.headers["content-type"] == "application/x-ndjson" and r.headers["x-dune-api-key"] == KEY for r in inserts
    )
    assert sorted(
        (m["table_name"], m["minute_file"], m["row_count"]) for m in dune.rows(NS, "jam_upload_manifest")
    ) == [("jam_assurances", A, 2), ("jam_assurances", B, 2), ("jam_blocks", A, 1)]
    assert {(t, r.files, r.rows) for t, r in report.tables.items() if r.files} == {
        ("assurances", 2, 4),
        ("blocks", 1, 1),
    }
    assert len(dune.latest_rows(NS, "assurances")) == 4


def test_unchanged_content_is_not_sent_again_changed_content_is(root, dune, clock):
    rows = [export_row("assurances", A, n) for n in (1, 2)]
    publish_rows(root, "assurances", A, rows)
    run(root, config(dune.url), clock)
    sent = len(dune.requests())

    assert run(root, config(dune.url), clock).requests == 0
    # Re-materialized with the same bytes: a new file (new mtime), the same sha256.
    publish_rows(root, "assurances", A, rows)
    assert run(root, config(dune.url), clock).requests == 0
    assert len(dune.requests()) == sent

    publish_rows(root, "assurances", A, [*rows, export_row("assurances", A, 3)])
    report = run(root, config(dune.url), clock)
    assert [r.path for r in dune.requests()[sent:]] == [
        "/api/v1/uploads/jamteam/jam_assurances/insert",
        "/api/v1/uploads/jamteam/jam_upload_manifest/insert",
    ]
    assert report.created == [] and report.tables["assurances"].rows == 3
    assert [r["line_no"] for r in dune.latest_rows(NS, "assurances")] == [1, 2, 3]


@pytest.mark.parametrize(
    "answer",
    [
        (409, {"error": "This table already exists"}),
        (400, {"error": "Table jamteam.jam_blocks already exists"}),
        # An idempotent create: success, with `already_existed` saying nothing was created (no credits).
        (
            200,
            {
                "namespace": NS,
                "table_name": "jam_blocks",
                "full_name": f"dune.{NS}.jam_blocks",
                "example_query": f"select * from dune.{NS}.jam_blocks limit 10",
                "already_existed": True,
                "message": "Table already exists",
            },
        ),
    ],
    ids=["409", "400-text", "200-already_existed"],
)
def test_a_table_that_already_exists_is_used_and_recorded(root, clock, answer):
    with DuneStandIn(KEY, clock=clock.now, requests_per_minute=None, exists_answer=answer) as dune:
        publish_rows(root, "blocks", A, [export_row("blocks", A, 1)])
        run(root, config(dune.url), clock)
        (root / LEDGER_FILE).unlink()  # a lost ledger: Dune has the tables, the ledger does not know

        publish_rows(root, "blocks", B, [export_row("blocks", B, 1)])
        report = run(root, config(dune.url), clock)
        assert report.failed == {} and report.created == []
        assert [r.status for r in dune.requests(CREATE)] == [201, 201, answer[0], answer[0]]
        assert {r["minute_file"] for r in dune.latest_rows(NS, "blocks")} == {A, B}

        publish_rows(root, "blocks", B, [export_row("blocks", B, 2)])
        run(root, config(dune.url), clock)
        assert len(dune.requests(CREATE)) == 4, "created tables are in the ledger: no create, no 10 credits"


def test_a_failed_table_does_not_stop_the_others_and_is_named(root, dune, clock):
    for table in ("blocks", "assurances", "tickets"):
        publish_rows(root, table, A, [export_row(table, A, 1)])
    dune.fail_next(400, path_contains="/api/v1/uploads")  # the first create: blocks
    dune.fail_next(400, path_contains="jam_tickets/insert")

    report = run(root, config(dune.url), clock)

    assert set(report.failed) == {"blocks", "tickets"}
    assert "HTTP 400" in report.failed["blocks"] and "jamteam.jam_blocks" in report.failed["blocks"]
    assert "blocks" in report.failure_message() and "tickets" in report.failure_message()
    assert len(dune.latest_rows(NS, "assurances")) == 1
    assert (NS, "jam_blocks") not in dune.tables and dune.rows(NS, "jam_tickets") == []

    report = run(root, config(dune.url), clock)
    assert report.failed == {} and {t for t, r in report.tables.items() if r.files} == {"blocks", "tickets"}
    for table in ("blocks", "assurances", "tickets"):
        assert len(dune.latest_rows(NS, table)) == 1


def test_a_large_export_is_split_at_line_boundaries(root, clock):
    rows = [export_row("blocks", A, n) for n in range(1, 21)]
    line = len(orjson.dumps(in_dune(rows[0], "blocks", "2025-01-01T00:00:00.000Z"))) + 1
    limit = 5 * line + 10
    with DuneStandIn(KEY, clock=clock.now, requests_per_minute=None, max_request_bytes=limit) as dune:
        publish_rows(root, "blocks", A, rows)
        report = run(root, config(dune.url, max_request_bytes=limit), clock)
        data = [r.body for r in dune.requests(INSERT) if "jam_blocks" in r.path]
        assert report.failed == {} and len(data) > 2
        assert all(len(body) <= limit and body.endswith(b"\n") for body in data)
        # Each request as full as the limit allows: the next one's first line would not have fit.
        assert all(len(body) + len(after.split(b"\n")[0]) + 1 > limit for body, after in zip(data, data[1:]))
        assert dune.rows(NS, "jam_blocks") == [in_dune(r, "blocks", report.uploaded_at) for r in rows]
        assert [r["line_no"] for r in dune.latest_rows(NS, "blocks")] == list(range(1, 21))

        # An export Dune refuses as too large (max_request_bytes set above its limit) fails its table only.
        publish_rows(root, "blocks", B, rows)
        publish_rows(root, "tickets", B, [export_row("tickets", B, 1)])
        report = run(root, config(dune.url, max_request_bytes=10 * limit), clock)
        assert list(report.failed) == ["blocks"] and "HTTP 413" in report.failed["blocks"]
        assert len(dune.latest_rows(NS, "tickets")) == 1


def test_one_bad_minute_file_does_not_block_its_table(root, dune, clock):
    publish_rows(root, "blocks", A, [export_row("blocks", A, 1, seal=None)])  # seal is REQUIRED
    publish_rows(root, "blocks", B, [export_row("blocks", B, 1)])
    huge = "0x" + "ab" * 3000
    publish_rows(root, "tickets", A, [export_row("tickets", A, 1, signature=huge)])
    publish_rows(root, "tickets", B, [export_row("tickets", B, 1)])

    report = run(root, config(dune.url, max_request_bytes=4000), clock)

    assert "2025/04/23/0600 line 1: required column seal is missing or null" in report.failed["blocks"]
    assert "exceeds max_request_bytes" in report.failed["tickets"]
    assert [r["minute_file"] for r in dune.latest_rows(NS, "blocks")] == [B]
    assert [r["minute_file"] for r in dune.latest_rows(NS, "tickets")] == [B]


def test_a_minute_with_fewer_rows_shows_only_its_latest_upload(root, dune, clock):
    publish_rows(root, "assurances", A, [export_row("assurances", A, n) for n in (1, 2, 3)])
    publish_rows(root, "assurances", B, [export_row("assurances", B, 1)])
    run(root, config(dune.url), clock)
    assert len(dune.latest_rows(NS, "assurances")) == 4

    publish_rows(root, "assurances", A, [export_row("assurances", A, 1, signature="re-processed")])
    second = run(root, config(dune.url), clock)

    assert len(dune.rows(NS, "jam_assurances")) == 5, "Dune keeps every row it was sent"
    latest = dune.latest_rows(NS, "assurances")
    assert sorted((r["minute_file"], r["line_no"], r["signature"]) for r in latest) == [
        (A, 1, "re-processed"),
        (B, 1, "v1"),
    ]
    assert {r["uploaded_at"] for r in latest if r["minute_file"] == A} == {
        datetime.fromisoformat(second.uploaded_at).replace(tzinfo=None)
    }

    publish_rows(root, "assurances", A, [])  # re-processed again: no rows at all now
    report = run(root, config(dune.url), clock)
    assert [r["minute_file"] for r in dune.latest_rows(NS, "assurances")] == [B]
    assert report.tables["assurances"].requests == 0, "only the manifest says the minute is empty now"


def test_an_upload_whose_outcome_is_unknown_is_hidden_then_replaced(root, dune, clock):
    publish_rows(root, "blocks", A, [export_row("blocks", A, n) for n in (1, 2, 3)])
    run(root, config(dune.url), clock)
    publish_rows(root, "blocks", A, [export_row("blocks", A, n, seal="new") for n in (1, 2, 3, 4, 5)])
    dune.lose_response_next("jam_blocks/insert")  # Dune stores the rows, the client never hears back

    report = run(root, config(dune.url), clock)

    assert "may or may not be in Dune" in report.failed["blocks"]
    assert len(dune.rows(NS, "jam_blocks")) == 8
    assert [r["seal"] for r in dune.latest_rows(NS, "blocks")] == ["v1", "v2", "v3"], "the previous complete upload"
    assert len(dune.requests(INSERT)) == 3, "an insert that may have landed is not resent within the run"

    run(root, config(dune.url), clock)
    assert len(dune.rows(NS, "jam_blocks")) == 13
    assert [r["seal"] for r in dune.latest_rows(NS, "blocks")] == ["new"] * 5


def test_a_failed_manifest_is_sent_next_run_without_resending_rows(root, dune, clock):
    publish_rows(root, "blocks", A, [export_row("blocks", A, 1)])
    dune.fail_next(500, path_contains="jam_upload_manifest/insert", times=6)  # beyond max_retries
    report = run(root, config(dune.url, backoff_seconds=0.01), clock)
    assert list(report.failed) == ["upload_manifest"] and "HTTP 500" in report.failed["upload_manifest"]
    assert dune.latest_rows(NS, "blocks") == []

    report = run(root, config(dune.url), clock)
    assert report.failed == {} and report.tables["blocks"].requests == 0
    assert len(dune.rows(NS, "jam_blocks")) == 1 and len(dune.latest_rows(NS, "blocks")) == 1


def test_only_changed_day_folders_are_listed(root, dune, clock):
    days = ["2025/04/20", "2025/04/21", "2025/04/22"]
    for day in days:
        publish_rows(root, "blocks", f"{day}/0600", [export_row("blocks", f"{day}/0600", 1)])
    age_day_folders(root)
    assert run(root, config(dune.url), clock).tables["blocks"].days_listed == 3
    second = run(root, config(dune.url), clock)
    assert second.tables["blocks"].days_listed == 0 and second.requests == 0

    # A minute of an old day re-published a month later is found: its folder's mtime changed.
    publish_rows(root, "blocks", "2025/04/20/0600", [export_row("blocks", "2025/04/20/0600", 1, seal="late")])
    report = run(root, config(dune.url), clock, now=NOW + timedelta(days=30))
    assert report.tables["blocks"].days_listed == 1 and report.tables["blocks"].files == 1
    assert {r["minute_file"]: r["seal"] for r in dune.latest_rows(NS, "blocks")}["2025/04/20/0600"] == "late"


def test_a_day_with_unsettled_minutes_is_listed_until_they_are_uploaded(root, dune, clock):
    publish_rows(root, "blocks", A, [export_row("blocks", A, 1)])
    publish_rows(root, "blocks", "2025/04/23/2330", [export_row("blocks", "2025/04/23/2330", 1)])
    age_day_folders(root)
    first = run(root, config(dune.url), clock)
    assert first.tables["blocks"].files == 1, "23:30 is within the settle window at midnight"

    later = NOW + timedelta(hours=2)
    assert run(root, config(dune.url), clock, now=later).tables["blocks"].files == 1
    assert run(root, config(dune.url), clock, now=later).tables["blocks"].days_listed == 0


def test_overlapping_runs_do_not_insert_twice(root):
    for k in (A, B):
        publish_rows(root, "blocks", k, [export_row("blocks", k, n) for n in (1, 2)])
    with DuneStandIn(KEY, requests_per_minute=None, insert_delay_seconds=0.3) as dune:
        start = threading.Barrier(2)
        reports = []

        def one_run():
            start.wait()
            reports.append(upload(root, config(dune.url), LOG, now=NOW))

        threads = [threading.Thread(target=one_run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(r.failed == {} for r in reports)
        assert sorted(r.tables["blocks"].files for r in reports) == [0, 2]
        assert len(dune.rows(NS, "jam_blocks")) == 4 and len(dune.requests(INSERT)) == 2


def test_a_run_that_cannot_get_the_lock_skips(root, dune, clock):
    publish_rows(root, "blocks", A, [export_row("blocks", A, 1)])
    with ledger_lock(root, 0) as held:
        assert held
        report = run(root, config(dune.url, lock_wait_seconds=1.0), clock)
    assert report.skipped and dune.requests() == []
    assert sum(s for s in clock.sleeps) >= 1.0, "it waited for the other run first"


def test_tables_are_private_unless_public_tables(root, clock):
    publish_rows(root, "blocks", A, [export_row("blocks", A, 1)])
    with DuneStandIn(KEY, clock=clock.now, requests_per_minute=None, private_tables=False) as dune:
        report = run(root, config(dune.url), clock)
        assert "HTTP 401" in report.failed["blocks"] and "public_tables" in report.failed["blocks"]
        assert [orjson.loads(r.body)["is_private"] for r in dune.requests(CREATE)] == [True]

        report = run(root, config(dune.url, public_tables=True), clock)
        assert report.failed == {}
        assert not any(t.is_private for t in dune.tables.values())


def test_storage_near_the_cap_is_warned_about(root, dune, clock, caplog):
    publish_rows(root, "blocks", A, [export_row("blocks", A, 1)])
    with caplog.at_level(logging.WARNING, logger="dune-test"):
        run(root, config(dune.url), clock)
        assert "storage" not in caplog.text
        publish_rows(root, "blocks", B, [export_row("blocks", B, 1)])
        report = run(root, config(dune.url, storage_cap_bytes=1000), clock)
    assert report.storage_bytes > 0.8 * 1000
    assert "of the 0.001 MB storage cap configured" in caplog.text


def test_retries_honour_retry_after_back_off_and_space_requests(root, clock):
    publish_rows(root, "blocks", A, [export_row("blocks", A, 1)])
    with DuneStandIn(KEY, clock=clock.now, requests_per_minute=None) as dune:
        dune.fail_next(429, path_contains="jam_blocks/insert", headers={"Retry-After": "7"})
        dune.fail_next(503, path_contains="jam_blocks/insert")
        report = run(root, config(dune.url, max_requests_per_minute=12, backoff_seconds=2.0), clock)
        assert report.failed == {}
        assert [r.status for r in dune.requests() if "jam_blocks/insert" in r.path] == [429, 503, 200]
        assert 7.0 in clock.sleeps and 4.0 in clock.sleeps  # Retry-After; 2 s * 2 ** attempt 1
        log = dune.requests()
    assert len(log) == 6  # 2 creates, 3 tries of the blocks insert, the manifest's
    gaps = [b.at - a.at for a, b in zip(log, log[1:])]
    assert all(g >= 5.0 for g in gaps), "60/12 s at least between request starts"
    assert gaps[1] == 7.0, "the 429's Retry-After"


def test_dune_rate_limit_answers_are_waited_out(root, clock):
    for k in (A, B):
        publish_rows(root, "tickets", k, [export_row("tickets", k, 1)])
        publish_rows(root, "blocks", k, [export_row("blocks", k, 1)])
    with DuneStandIn(KEY, clock=clock.now, requests_per_minute=3) as dune:
        report = run(root, config(dune.url, max_requests_per_minute=6000), clock)
        assert report.failed == {}
        assert 429 in [r.status for r in dune.requests()]
        assert len(dune.latest_rows(NS, "tickets")) == 2 and len(dune.latest_rows(NS, "blocks")) == 2


def test_the_api_key_is_in_no_message(root, clock, caplog):
    publish_rows(root, "blocks", A, [export_row("blocks", A, 1)])
    with DuneStandIn(KEY, clock=clock.now, requests_per_minute=None) as dune:
        dune.fail_next(400, path_contains="jam_blocks/insert", body={"error": f"bad key {KEY} in request"})
        with caplog.at_level(logging.INFO, logger="dune-test"):
            report = run(root, config(dune.url), clock)
        assert "***" in report.failed["blocks"]
    with caplog.at_level(logging.INFO, logger="dune-test"):
        unreachable = run(root, config(dune.url, max_retries=0), clock)  # the stand-in is gone
    for text in (report.failure_message(), unreachable.failure_message(), caplog.text, repr(config(dune.url))):
        assert KEY not in text
    assert "blocks" in unreachable.failed


def test_a_table_created_with_other_columns_is_refused_until_forgotten(root, dune, clock):
    publish_rows(root, "tickets", A, [export_row("tickets", A, 1)])
    run(root, config(dune.url), clock)
    publish_rows(root, "tickets", B, [export_row("tickets", B, 1)])
    with_codec = config(dune.url, include_codec_encoded=True)  # a schema change as Dune sees it

    report = run(root, with_codec, clock)
    assert "new: ['codec_encoded']" in report.failed["tickets"] and "forget_table" in report.failed["tickets"]
    assert not any("jam_tickets/insert" in r.path for r in dune.requests()[-2:])

    del dune.tables[(NS, "jam_tickets")]  # DELETE /api/v1/uploads/jamteam/jam_tickets
    forget_table(root, with_codec, "tickets")
    report = run(root, with_codec, clock)
    assert report.failed == {} and report.created == ["jam_tickets"]
    assert sorted(r["minute_file"] for r in dune.latest_rows(NS, "tickets")) == [A, B]
    assert all(r["codec_encoded"] == "0x00" for r in dune.latest_rows(NS, "tickets"))


def test_ledger_keys_minutes_on_content_hash(root, dune, clock):
    publish_rows(root, "blocks", A, [export_row("blocks", A, 1)])
    run(root, config(dune.url), clock)
    ledger = Ledger(root / LEDGER_FILE)
    record = ledger.minute(f"{NS}.jam_blocks", A)
    ledger.close()
    assert record.sha256 == hashlib.sha256(export_path(root, "blocks", A).read_bytes()).hexdigest()


def test_the_op_reports_per_table_and_fails_naming_tables(root, dune):
    publish_rows(root, "blocks", A, [export_row("blocks", A, 1)])
    publish_rows(root, "tickets", A, [export_row("tickets", A, 1)])
    resources = {
        "settings": JamSettings(export_dir=str(root)),
        "dune": DuneResource(api_key=KEY, namespace=NS, base_url=dune.url, max_requests_per_minute=6000),
    }
    dune.fail_next(400, path_contains="jam_tickets/insert")
    with dg.instance_for_test() as instance:
        failed = dune_upload_job.execute_in_process(resources=resources, instance=instance, raise_on_error=False)
        assert not failed.success
        failure = failed.failure_data_for_node("dune_upload").error
        assert "tickets" in failure.message and KEY not in failure.message

        done = dune_upload_job.execute_in_process(resources=resources, instance=instance)
        assert done.success
        [materialized] = [e for e in done.all_events if e.event_type_value == "STEP_OUTPUT"]
        metadata = {k: v.value for k, v in materialized.event_specific_data.metadata.items()}
        assert metadata["rows_by_table"] == {"tickets": 1}
        assert metadata["tables_created"] == [] and metadata["tables_failed"] == {}


def test_the_daily_leaderboard_is_uploaded_and_a_changed_day_replaces_it(root, dune, clock):
    """Per-day tables go up like the others, once their day is over; the view keeps each day's latest upload."""
    from jam_assets.defs.io_managers import day_export_path

    def publish_day(rows):
        staged = root / ".staging" / f"lb-{time.monotonic_ns()}.jsonl"
        staged.parent.mkdir(parents=True, exist_ok=True)
        staged.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        publish(staged, day_export_path(root, "leaderboard", "2025-04-23"))

    row = lambda team, rank: {
        "day": "2025-04-23",
        "team": team,
        "metric": "block_author",
        "values": 12,
        "median_us": 50_000 * rank,
        "p90_us": 90_000,
        "min_us": 1_000,
        "max_us": 99_000,
        "rank": rank,
        "flag": None,
    }
    publish_day([row("A", 1), row("B", 2), row("C", 3)])
    assert run(root, config(dune.url), clock, now=NOW).tables["leaderboard"].files == 0  # the day is not over + settled
    later = NOW + timedelta(hours=2)
    run(root, config(dune.url), clock, now=later)
    assert sorted(r["team"] for r in dune.latest_rows(NS, "leaderboard")) == ["A", "B", "C"]
    publish_day([row("B", 1)])
    run(root, config(dune.url), clock, now=later)
    assert [(r["team"], r["rank"]) for r in dune.latest_rows(NS, "leaderboard")] == [("B", 1)]
    assert len(dune.rows(NS, "jam_leaderboard")) == 4


def test_a_table_deleted_in_dune_is_created_again_after_jam_etl_dune_forget(root, dune, clock, monkeypatch, capsys):
    from jam_assets import cli

    for minute in (A, B):
        publish_rows(root, "blocks", minute, [export_row("blocks", minute, 1)])
    run(root, config(dune.url), clock)
    dune.drop_table(NS, "jam_blocks")  # e.g. its schema changed
    creates = len(dune.requests(CREATE))
    run(root, config(dune.url), clock)
    assert len(dune.requests(CREATE)) == creates, "the ledger still lists the table and its uploads"

    for name, value in {"DUNE_API_KEY": KEY, "DUNE_NAMESPACE": NS, "JAM_EXPORT_DIR": str(root)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DAGSTER_DEPLOYMENT", raising=False)
    assert cli.main(["dune-forget", "blocks"]) == 0
    assert capsys.readouterr().out == (
        f"the Dune ledger forgot dune.{NS}.jam_blocks: the next upload creates it and sends every export again\n"
    )
    report = run(root, config(dune.url), clock)
    assert report.failed == {} and report.created == ["jam_blocks"]
    assert sorted(r["minute_file"] for r in dune.latest_rows(NS, "blocks")) == [A, B]

    assert cli.main(["dune-forget", "block"]) == 2
    assert capsys.readouterr().err.startswith("jam-etl: 'block' is not a table; the tables are: blocks, ")
    monkeypatch.delenv("DUNE_API_KEY")
    assert cli.main(["dune-forget", "blocks"]) == 2
    assert capsys.readouterr().err == (
        "jam-etl: DUNE_API_KEY is not set: the ledger is kept per Dune namespace, set it and DUNE_NAMESPACE\n"
    )
