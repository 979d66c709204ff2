"""Staging on several processes gives exactly what one pass gives: the same bytes, the same summary."""

import hashlib
from datetime import UTC, datetime

import orjson
import pytest

from jam_assets.core import parallel, schema
from jam_assets.core.generator import TINY, TOASTER, Generator
from jam_assets.core.parallel import MinuteFileJob, stage_minute_files

from .helpers import sample_json, sample_line

START = datetime(2025, 4, 23, 6, 0, tzinfo=UTC)


def awkward_minute(path):
    """Every kind of line, including the ones that go wrong, and a last line with no newline."""
    preimage = sample_json("142")
    preimage["metadata"] = preimage["metadata"].replace("h=0x", "h=0xff")  # metadata h that does not match
    block = sample_json("128")
    block["metadata"] = "team=JAMDUNA|codec_len=3"  # codec_len that does not match
    lines = [
        b"\xef\xbb\xbf" + sample_line("128"),
        b"{broken",
        orjson.dumps(preimage),
        orjson.dumps(block),
        b"",
        sample_line("13") + b"\r",
        b'{"msg_type":"77"}',
        b"\xff\xfe not utf-8",
    ]
    body = b"".join(line + b"\n" for line in lines)
    body += b"".join(Generator(TOASTER, seed=2).slot_lines(1_609_201))
    path.write_bytes(body + sample_line("131") + b"\n" + sample_line("141")[:-9])


def stage(tmp_path, name, jobs_spec, workers):
    jobs = [MinuteFileJob(path, key, tmp_path / name / key) for key, path in jobs_spec]
    results = list(stage_minute_files(jobs, workers=workers))
    return [
        (job.minute_file, summary.as_dict(), {t: p.read_bytes() for t, p in files.items()})
        for job, summary, files in results
    ]


@pytest.mark.parametrize("piece_bytes", [1, 4096, 1 << 30])
def test_two_workers_give_the_bytes_and_summary_of_one_pass(tmp_path, monkeypatch, piece_bytes):
    awkward_minute(tmp_path / "0600.log")
    gen = Generator(TINY, seed=6)
    gen.write_minute(tmp_path / "logs", START.replace(minute=1))
    spec = [("2025/04/23/0600", tmp_path / "0600.log"), ("2025/04/23/0601", tmp_path / "logs/2025/04/23/0601.log")]

    one = stage(tmp_path, "one", spec, workers=1)
    monkeypatch.setattr(parallel, "PIECE_BYTES", piece_bytes)  # 1: every file is cut, even the small one
    two = stage(tmp_path, "two", spec, workers=2)
    three = stage(tmp_path, "three", spec, workers=3)

    assert two == one and three == one
    key, summary, files = one[0]
    assert summary["sha256"] == hashlib.sha256((tmp_path / "0600.log").read_bytes()).hexdigest()
    assert summary["lines"] == summary["lines_with_rows"] + summary["rejected"]
    assert summary["rejected_by_reason"] == {
        "blank_line": 1,
        "invalid_json": 1,
        "invalid_utf8": 1,
        "truncated_line": 1,
        "unknown_msg_type": 1,
    }
    assert summary["preimage_hash_mismatches"] == 1 and summary["codec_len_mismatches"] == 1
    line_nos = [orjson.loads(r)["line_no"] for r in files["rejected_lines"].splitlines()]
    assert line_nos == [2, 5, 7, 8, summary["lines"]]
    # No piece folders are left behind.
    assert sorted(p.name for p in (tmp_path / "two" / key).iterdir()) == sorted(f"{t}.jsonl" for t in schema.ALL_TABLES)


def test_a_large_file_is_cut_at_line_starts(tmp_path, monkeypatch):
    path = tmp_path / "0600.log"
    path.write_bytes(b"0123456789\n" * 10)  # lines start at multiples of 11
    monkeypatch.setattr(parallel, "PIECE_BYTES", 1)
    pieces = parallel._cut(MinuteFileJob(path, "k", tmp_path), 4)  # aims at 27, 55, 82
    assert [(p.start, p.end) for p in pieces] == [(0, 33), (33, 66), (66, 88), (88, -1)]
    # A line longer than a piece: fewer pieces, never one that starts inside a line.
    path.write_bytes(b"a" * 10 + b"\n" + b"b" * 100 + b"\n" + b"c\n")
    pieces = parallel._cut(MinuteFileJob(path, "k", tmp_path), 4)
    assert [(p.start, p.end) for p in pieces] == [(0, 112), (112, -1)]
    assert not any(p.whole for p in pieces)
    assert [(p.start, p.end, p.whole) for p in parallel._cut(MinuteFileJob(path, "k", tmp_path), 1)] == [(0, -1, True)]
