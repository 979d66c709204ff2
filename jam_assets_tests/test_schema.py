"""schema/*.json is the contract: bq-compatible files, and every row the core writes conforms."""

import json
from datetime import datetime

import pytest

from jam_assets.core import schema
from jam_assets.core.generator import TINY, TOASTER, Generator

from .helpers import PROJECT, derive, sample_line

BQ_TYPES = {"STRING", "INTEGER", "TIMESTAMP"}
COMMON = ["minute_file", "minute_start", "line_no", "time", "slot", "team", "sender_id", "elapsed"]


def test_one_schema_file_per_table_and_nothing_else():
    files = sorted(p.stem for p in (PROJECT / "schema").glob("*.json"))
    assert files == sorted(schema.ALL_TABLES + schema.DAY_TABLES)


@pytest.mark.parametrize("table", schema.ALL_TABLES)
def test_schema_file_is_bq_mk_compatible(table):
    fields = json.loads((PROJECT / "schema" / f"{table}.json").read_text())
    assert isinstance(fields, list) and fields
    for f in fields:
        assert set(f) == {"name", "type", "mode", "description"}
        assert f["name"] == f["name"].lower() and f["name"].isidentifier()
        assert f["type"] in BQ_TYPES and f["mode"] in {"REQUIRED", "NULLABLE"}
    names = [f["name"] for f in fields]
    assert len(names) == len(set(names))
    assert names[:2] == ["minute_file", "minute_start"]
    if table != schema.REJECTED:
        assert names[:8] == COMMON
        assert names[-1] == "codec_encoded" or table.endswith("statistics")
        modes = {f["name"]: f["mode"] for f in fields}
        assert [modes[c] for c in COMMON] == [
            "REQUIRED",
            "REQUIRED",
            "REQUIRED",
            "REQUIRED",
            "NULLABLE",
            "REQUIRED",
            "NULLABLE",
            "NULLABLE",
        ]


def conforms(table: str, row: dict) -> None:
    cols = schema.columns(table)
    assert list(row) == [c.name for c in cols], f"{table}: columns or their order differ from schema/{table}.json"
    for c in cols:
        value = row[c.name]
        if value is None:
            assert not c.required, f"{table}.{c.name} is REQUIRED but null"
            continue
        if c.type == "INTEGER":
            assert type(value) is int and -(2**63) <= value < 2**63, (table, c.name, value)
        elif c.type == "TIMESTAMP":
            datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ")
            assert len(value) == 27
        else:
            assert type(value) is str and value != "null", (table, c.name, value)


def test_rows_from_every_sample_and_generated_minutes_conform():
    data = b"".join(sample_line(t) + b"\n" for t in ("128", "13", "255", "142", "131", "133", "135", "141", "143"))
    data += b"not json\n"
    for profile in (TINY, TOASTER):
        gen = Generator(profile, seed=3)
        for slot in range(1_609_201, 1_609_203 if profile is TINY else 1_609_202):
            data += b"".join(gen.slot_lines(slot))
    rows, summary = derive(data)
    assert summary.rejected == 1
    for table in schema.ALL_TABLES:
        assert rows[table], f"no {table} rows to check"
        for row in rows[table]:
            conforms(table, row)


def test_samples_copy_matches_shared():
    from .helpers import SAMPLES, SHARED

    if not SHARED.exists():
        pytest.skip(f"{SHARED} is not beside the repo")
    ours = {p.relative_to(SAMPLES): p.read_bytes() for p in SAMPLES.rglob("*.json")}
    theirs = {p.relative_to(SHARED / "samples"): p.read_bytes() for p in (SHARED / "samples").rglob("*.json")}
    assert ours == theirs
