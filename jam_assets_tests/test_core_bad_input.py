"""Bad input never stops a file: each bad line becomes one exact `rejected_lines` row (or a correct
row), every other line is processed, and lines with rows + rejected lines = lines in the file."""

import hashlib
import io
import os

import orjson
import pytest

from jam_assets.core.staging import JsonlStage
from jam_assets.core.transform import recover_raw, transform_stream

from .helpers import derive, sample_json, sample_line

MF = "2025/04/23/0600"
GOOD = sample_line("141")


def check_accounting(rows, summary):
    lines_with_rows = {(r["line_no"]) for t, rs in rows.items() if t != "rejected_lines" for r in rs}
    rejected = [r["line_no"] for r in rows["rejected_lines"]]
    assert len(rejected) == len(set(rejected)) == summary.rejected
    assert not lines_with_rows & set(rejected)
    assert len(lines_with_rows) + len(rejected) == summary.lines


def rejected_only(data: bytes):
    """Bad line between two good ones: returns the single rejected row."""
    rows, summary = derive(GOOD + b"\n" + data + b"\n" + GOOD + b"\n", MF)
    check_accounting(rows, summary)
    assert [r["line_no"] for r in rows["assurances"]] == [1, 3], "the good lines around it are processed"
    (rejected,) = rows["rejected_lines"]
    assert rejected["line_no"] == 2
    assert recover_raw(rejected) == data
    return rejected


def envelope(**changes):
    line = sample_json("141")
    for key, value in changes.items():
        if value is ...:
            del line[key]
        else:
            line[key] = value
    return orjson.dumps(line)


def test_invalid_json():
    r = rejected_only(b'{"time": "2025-04-23T06:00:06Z", "msg_type": ')
    assert (r["reason"], r["msg_type"], r["raw_base64"]) == ("invalid_json", None, None)
    assert r["raw"] == '{"time": "2025-04-23T06:00:06Z", "msg_type": '
    assert "unexpected end of data" in r["detail"]


def test_blank_lines_are_counted_and_rejected():
    for blank in (b"", b"   ", b"\r"):
        r = rejected_only(blank)
        assert (r["reason"], r["detail"]) == ("blank_line", "the line is empty or only white space")


def test_truncated_last_line():
    cut = GOOD[: len(GOOD) // 2]
    rows, summary = derive(GOOD + b"\n" + cut, MF)
    check_accounting(rows, summary)
    (r,) = rows["rejected_lines"]
    assert (r["line_no"], r["reason"], r["raw"]) == (2, "truncated_line", cut.decode())
    assert r["detail"].startswith("the last line has no newline and is incomplete")
    assert summary.bytes == len(GOOD) + 1 + len(cut)


def test_complete_last_line_without_newline_is_a_row():
    rows, summary = derive(GOOD + b"\n" + GOOD, MF)
    assert len(rows["assurances"]) == 2 and summary.rejected == 0


def test_crlf_endings():
    rows, summary = derive(GOOD + b"\r\n" + b"{oops\r\n" + GOOD + b"\r\n", MF)
    check_accounting(rows, summary)
    assert len(rows["assurances"]) == 2
    (r,) = rows["rejected_lines"]
    assert r["raw"] == "{oops\r"  # the line exactly, without only its newline


def test_utf8_bom_on_first_line():
    rows, summary = derive(b"\xef\xbb\xbf" + GOOD + b"\n" + GOOD + b"\n", MF)
    assert len(rows["assurances"]) == 2 and summary.rejected == 0


def test_bytes_that_are_not_utf8_survive_exactly():
    bad = b'{"time": "\xff\xfe\x00 caf\xe9"}'
    r = rejected_only(bad)
    assert (r["reason"], r["raw"]) == ("invalid_utf8", None)
    assert r["detail"] == "byte 10 is not UTF-8"
    assert r["raw_base64"] == "eyJ0aW1lIjogIv/+ACBjYWbpIn0="


def test_msg_type_as_json_number():
    rows, summary = derive(envelope(msg_type=141) + b"\n", MF)
    assert len(rows["assurances"]) == 1 and summary.lines_by_msg_type == {"141": 1}


def test_unknown_msg_type():
    r = rejected_only(envelope(msg_type="77"))
    assert (r["reason"], r["msg_type"]) == ("unknown_msg_type", "77")
    assert r["detail"] == "msg_type 77 is not one of 0, 3, 13, 128, 131, 133, 135, 141, 142, 143, 255"


@pytest.mark.parametrize(
    "changes, reason, detail",
    [
        ({"json_encoded": ...}, "missing_field", "json_encoded is missing"),
        ({"time": ...}, "missing_field", "time is missing"),
        ({"msg_type": ...}, "missing_field", "msg_type is missing"),
        ({"time": "23/04/2025 06:00"}, "bad_value", "time is not RFC 3339: '23/04/2025 06:00'"),
        (
            {"time": "2025-02-30T06:00:00Z"},
            "bad_value",
            "time is not a valid date: '2025-02-30T06:00:00Z' (day is out of range for month)",
        ),
        ({"time": 1745388006}, "bad_value", "time must be a string, got 1745388006"),
        ({"msg_type": "1x"}, "bad_value", "msg_type must be a string of digits, got '1x'"),
        ({"elapsed": -5}, "bad_value", "elapsed must be a whole, non-negative number of microseconds, got -5"),
        ({"elapsed": 12.5}, "bad_value", "elapsed must be a whole, non-negative number of microseconds, got 12.5"),
        ({"elapsed": "6092"}, "bad_value", "elapsed must be a whole, non-negative number of microseconds, got '6092'"),
        ({"metadata": {"team": "x"}}, "bad_value", "metadata must be a string, got {'team': 'x'}"),
        ({"json_encoded": [1, 2]}, "bad_value", "json_encoded must be an object, got a list [1, 2]"),
        ({"json_encoded": None}, "missing_field", "json_encoded is missing"),
    ],
)
def test_envelope_problems(changes, reason, detail):
    r = rejected_only(envelope(**changes))
    assert (r["reason"], r["detail"]) == (reason, detail)


def test_not_an_object():
    r = rejected_only(b"[1, 2, 3]")
    assert (r["reason"], r["detail"]) == ("not_an_object", "the line is a JSON list, not an object")


def test_string_where_a_number_belongs():
    line = sample_json("128")
    line["json_encoded"]["header"]["slot"] = "1609201"
    r = rejected_only(orjson.dumps(line))
    assert (r["reason"], r["msg_type"]) == ("bad_value", "128")
    assert r["detail"] == "slot (header.slot) must be an integer, got '1609201'"


def test_object_where_a_list_belongs():
    line = sample_json("128")
    line["json_encoded"]["extrinsic"]["tickets"] = {"n": 1}
    r = rejected_only(orjson.dumps(line))
    assert (r["reason"], r["detail"]) == ("bad_value", "extrinsic.tickets must be a list, got an object {'n': 1}")


def test_missing_required_payload_field():
    line = sample_json("141")
    del line["json_encoded"]["anchor"]
    r = rejected_only(orjson.dumps(line))
    assert (r["reason"], r["detail"]) == ("missing_field", "anchor (anchor) is missing")


def test_integer_beyond_64_bits():
    line = sample_json("143")
    line["json_encoded"]["balance"] = 2**63
    r = rejected_only(orjson.dumps(line))
    assert (r["reason"], r["detail"]) == (
        "bad_value",
        "services.balance = 9223372036854775808 does not fit a 64-bit INTEGER",
    )


def test_statistics_with_nothing_in_them():
    line = sample_json("13")
    line["json_encoded"] = {"vals_current": [], "vals_last": [], "cores": [], "services": []}
    r = rejected_only(orjson.dumps(line))
    assert (r["reason"], r["detail"]) == ("empty_payload", "msg_type 13 payload gave no rows (all record lists empty)")


def test_a_30_mb_line_is_processed():
    line = sample_json("142")
    blob = os.urandom(15 * 1024 * 1024)
    line["json_encoded"]["blob"] = "0x" + blob.hex()
    data = orjson.dumps(line)
    assert len(data) > 30 * 1024 * 1024
    rows, summary = derive(GOOD + b"\n" + data + b"\n", MF)
    (row,) = rows["preimages"]
    assert row["blob_length"] == len(blob) and summary.lines_with_rows == 2


def test_a_million_tiny_lines(tmp_path):
    tiny = b'{"time":"2025-04-23T06:00:01Z","msg_type":"135","json_encoded":null}\n'
    data = tiny * 1_000_000
    with JsonlStage(tmp_path, ["segments", "rejected_lines"]) as sink:
        summary = transform_stream(io.BytesIO(data), MF, sink)
    files = sink.close()
    out = files["segments"].read_bytes().splitlines()
    assert summary.lines == summary.lines_with_rows == len(out) == 1_000_000
    assert orjson.loads(out[-1])["line_no"] == 1_000_000
    assert files["rejected_lines"].stat().st_size == 0
    assert summary.bytes == len(data)


def test_empty_file():
    rows, summary = derive(b"", MF)
    assert summary.lines == summary.bytes == 0
    assert all(r == [] for r in rows.values())
    assert summary.sha256 == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_a_binary_blob_is_rejected_line_by_line_and_recoverable():
    blob = os.urandom(256 * 1024) + b"\n" + os.urandom(1000)
    rows, summary = derive(blob, MF)
    check_accounting(rows, summary)
    assert summary.lines_with_rows == 0
    rebuilt = b"\n".join(recover_raw(r) for r in sorted(rows["rejected_lines"], key=lambda r: r["line_no"]))
    assert rebuilt == blob
    assert set(summary.rejected_by_reason) <= {
        "invalid_utf8",
        "invalid_json",
        "truncated_line",
        "blank_line",
        "not_an_object",
    }


def test_a_rejected_first_line_keeps_its_byte_order_mark_and_chunk_edges_lose_nothing(monkeypatch):
    from jam_assets.core import transform

    data = b"\xef\xbb\xbf{not json\n" + sample_line("128") + b"\r\n" + b"x" * 50 + b"\n\n" + sample_line("13")
    # Chunks smaller than a line: every line is reassembled across chunk edges.
    monkeypatch.setattr(transform, "_CHUNK", 7)
    rows, summary = derive(data, MF)
    assert [recover_raw(r) for r in rows["rejected_lines"]] == [b"\xef\xbb\xbf{not json", b"x" * 50, b""]
    assert [r["reason"] for r in rows["rejected_lines"]] == ["invalid_json", "invalid_json", "blank_line"]
    assert summary.lines == 5 and summary.bytes == len(data) and len(rows["blocks"]) == 1
    assert summary.sha256 == hashlib.sha256(data).hexdigest()
    assert len(rows["validatorstatistics"]) == 6  # the last line, with no newline, is whole
