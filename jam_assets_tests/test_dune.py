"""Dune uploads against a local fake of the uploads API: requests, retries, rate, ledger."""

import logging
from datetime import datetime, timezone

import orjson
import pytest

from jam_assets.defs.dune import DuneError, DuneResource, Ledger, dune_schema, upload
from jam_assets.core.staging import export_path

from .fakes import FakeServer, dune_handler
from .helpers import sample_line

NOW = datetime(2025, 4, 24, 0, 0, tzinfo=timezone.utc)
KEYS = ["2025/04/23/0600", "2025/04/23/0601"]
LOG = logging.getLogger("dune-test")


@pytest.fixture
def exports(tmp_path):
    root = tmp_path / "exports"
    for i, key in enumerate(KEYS):
        row = orjson.loads(sample_line("141"))
        rows = [{"minute_file": key, "line_no": n, "time": "2025-04-23T06:00:00.000000Z", "slot": 1, "team": "x",
                 "sender_id": None, "elapsed": 1, "anchor": row["json_encoded"]["anchor"], "bitfield": "0x03",
                 "validator_index": n, "signature": row["json_encoded"]["signature"], "codec_encoded": "0x00"}
                for n in (1, 2)]
        path = export_path(root, "assurances", key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return root


def resource(url, **kw):
    return DuneResource(api_key="sk-test-secret-123", namespace="jamteam", base_url=url, **kw)


def test_creates_inserts_batches_and_records(exports):
    sleeps = []
    with FakeServer(dune_handler) as fake:
        fake.state["insert_statuses"] = [429, 503]
        inserted = upload(exports, resource(fake.url), LOG, now=NOW, settle_seconds=3600, sleep=sleeps.append)
        assert inserted == {"assurances": 4}
        create = [r for r in fake.requests if r.path == "/api/v1/uploads"]
        assert len(create) == 1
        assert create[0].headers["x-dune-api-key"] == "sk-test-secret-123"
        assert create[0].json() == {
            "namespace": "jamteam", "table_name": "jam_assurances",
            "description": "JAM telemetry: assurances (jam-etl; schema/assurances.json)",
            "schema": dune_schema("assurances", include_codec=False), "is_private": False}
        assert {"name": "validator_index", "type": "bigint", "nullable": False} in create[0].json()["schema"]
        assert not any(c["name"] == "codec_encoded" for c in create[0].json()["schema"])
        inserts = [r for r in fake.requests if r.path.endswith("/insert")]
        assert [r.path for r in inserts] == ["/api/v1/uploads/jamteam/jam_assurances/insert"] * 3  # 429, 503, 200
        assert inserts[-1].headers["content-type"] == "application/x-ndjson"
        rows = [orjson.loads(line) for line in fake.state["inserted"][0][1].splitlines()]
        assert [(r["minute_file"], r["line_no"]) for r in rows] == [(k, n) for k in KEYS for n in (1, 2)]
        assert all("codec_encoded" not in r for r in rows)
        # Retry-After honoured on 429, exponential backoff on 5xx, requests spaced for the rate limit.
        assert 3.0 in sleeps and 4.0 in sleeps
        assert any(4.9 < s <= 5.0 for s in sleeps), "requests are spaced 60/12 s apart"
        ledger = Ledger(exports / "dune_ledger.sqlite")
        assert sorted(ledger.signatures("assurances")) == KEYS
        ledger.close()

        # Nothing new: nothing is sent. A changed minute is sent again, alone.
        before = len(fake.requests)
        assert upload(exports, resource(fake.url), LOG, now=NOW, sleep=sleeps.append) == {}
        assert len(fake.requests) == before
        path = export_path(exports, "assurances", KEYS[1])
        path.write_bytes(path.read_bytes() + path.read_bytes().splitlines(keepends=True)[0])
        assert upload(exports, resource(fake.url), LOG, now=NOW, sleep=sleeps.append) == {"assurances": 3}


def test_a_failed_insert_is_not_recorded_and_is_retried_next_run(exports):
    with FakeServer(dune_handler) as fake:
        fake.state["insert_statuses"] = [400]
        with pytest.raises(DuneError) as failed:
            upload(exports, resource(fake.url), LOG, now=NOW, sleep=lambda s: None)
        assert "HTTP 400" in str(failed.value) and "sk-test-secret-123" not in str(failed.value)
        ledger = Ledger(exports / "dune_ledger.sqlite")
        assert ledger.signatures("assurances") == {}
        ledger.close()
        assert upload(exports, resource(fake.url), LOG, now=NOW, sleep=lambda s: None) == {"assurances": 4}


def test_batches_respect_the_size_cap_and_open_minutes_wait(exports):
    with FakeServer(dune_handler) as fake:
        size = export_path(exports, "assurances", KEYS[0]).stat().st_size
        upload(exports, resource(fake.url, max_request_bytes=size, include_codec_encoded=True), LOG, now=NOW,
               sleep=lambda s: None)
        assert len(fake.state["inserted"]) == 2, "one request per minute file when two do not fit"
    with FakeServer(dune_handler) as fake:
        (exports / "dune_ledger.sqlite").unlink()
        early = datetime(2025, 4, 23, 6, 30, tzinfo=timezone.utc)  # within an hour of the minutes: not settled
        assert upload(exports, resource(fake.url), LOG, now=early, settle_seconds=3600, sleep=lambda s: None) == {}
