"""Each published sample line -> the exact rows FORMAT.md says it gives, every column.

Expected values are worked out by hand from FORMAT.md: time truncated to microseconds, slot =
floor((time - 2025-01-01T12:00:00Z) / 6 s), team through the alias map, sender_id from the top
level or metadata `id`. Long hex values are taken from the sample itself, since the transform
passes them through untouched.
"""

import orjson
import pytest

from jam_assets.core import schema

from .helpers import derive, nonempty, sample_json, sample_line

MF = "2025/04/23/0600"
MS = "2025-04-23T06:00:00.000000Z"  # minute_start: from the key, whatever the line's time


def only_rows(msg_type: str) -> dict[str, list[dict]]:
    rows, summary = derive(sample_line(msg_type) + b"\n", MF)
    assert summary.lines == 1 and summary.lines_with_rows == 1 and summary.rejected == 0
    return nonempty(rows)


def test_block_128_real():
    s = sample_json("128")
    h = s["json_encoded"]["header"]
    assert only_rows("128") == {
        "blocks": [
            {
                "minute_file": MF,
                "minute_start": MS,
                "line_no": 1,
                "time": "2025-04-23T06:00:06.285625Z",
                "slot": 1609201,
                "team": "Jam-Duna",
                "sender_id": None,
                "elapsed": 63495,
                "parent": "0xeaa27da7c94c239fd15ad3ba240081b17db131b0972f6fe2cc05e6bc7032b448",
                "parent_state_root": "0xb9ce8e30b6b1ae1c6eb51f4291e2cb3575e2e9e6a4b02a40cdaad0ee9c419ec9",
                "extrinsic_hash": "0x189d15af832dfe4f67744008b62c334b569fcbb4c261e0f065655697306ca252",
                "header_slot": 1609201,
                "author_index": 1,
                "entropy_source": h["entropy_source"],
                "seal": h["seal"],
                "num_tickets": 0,
                "num_preimages": 0,
                "num_guarantees": 0,
                "num_assurances": 0,
                "num_verdicts": 0,
                "num_culprits": 0,
                "num_faults": 0,
                "codec_encoded": s["codec_encoded"],
            }
        ]
    }


def test_statistics_13_real():
    common = {
        "minute_file": MF,
        "minute_start": MS,
        "line_no": 1,
        "time": "2025-04-23T06:00:06.285747Z",
        "slot": 1609201,
        "team": "Jam-Duna",
        "sender_id": None,
        "elapsed": None,
    }
    current_blocks = [0, 1, 1, 0, 0, 0]
    last_blocks = [1, 3, 2, 2, 1, 3]
    last_guarantees = [2, 1, 2, 1, 1, 2]
    validators = [
        {
            **common,
            "validator_id": i,
            "current_blocks": current_blocks[i],
            "current_tickets": 0,
            "current_pre_images": 0,
            "current_pre_images_size": 0,
            "current_guarantees": 0,
            "current_assurances": 0,
            "last_blocks": last_blocks[i],
            "last_tickets": 0,
            "last_pre_images": 0,
            "last_pre_images_size": 0,
            "last_guarantees": last_guarantees[i],
            "last_assurances": 0,
        }
        for i in range(6)
    ]
    cores = [
        {
            **common,
            "core": i,
            "da_load": 0,
            "popularity": 0,
            "imports": 0,
            "exports": 0,
            "extrinsic_size": 0,
            "extrinsic_count": 0,
            "bundle_size": 0,
            "gas_used": 0,
        }
        for i in range(2)
    ]
    # services is [] in this sample: no servicestatistics rows, and no row is invented.
    assert only_rows("13") == {"validatorstatistics": validators, "corestatistics": cores}


def test_statistics_service_rows():
    line = sample_json("13")
    record = {
        f: n
        for n, f in enumerate(
            [
                "provided_count",
                "provided_size",
                "refinement_count",
                "refinement_gas_used",
                "imports",
                "exports",
                "extrinsic_size",
                "extrinsic_count",
                "accumulate_count",
                "accumulate_gas_used",
                "on_transfers_count",
                "on_transfers_gas_used",
            ],
            start=1,
        )
    }
    record["accumulate_gas_used"] = 2**40  # gas overflows 32 bits
    line["json_encoded"]["services"] = [{"id": 3073449728, "record": record}]
    rows, _ = derive(orjson.dumps(line) + b"\n", MF)
    assert rows["servicestatistics"] == [
        {
            "minute_file": MF,
            "minute_start": MS,
            "line_no": 1,
            "time": "2025-04-23T06:00:06.285747Z",
            "slot": 1609201,
            "team": "Jam-Duna",
            "sender_id": None,
            "elapsed": None,
            "service_id": 3073449728,
            **record,
        }
    ]


def test_work_report_255_real():
    s = sample_json("255")
    assert only_rows("255") == {
        "workreports": [
            {
                "minute_file": MF,
                "minute_start": MS,
                "line_no": 1,
                "time": "2025-04-23T09:56:37.181977Z",
                "slot": 1611566,
                "team": "Jam-Duna",
                "sender_id": "0xb3e0e096b02e2ec98a3441410aeddd78c95e27a0da6f411a09c631c0f2bea6e9",  # metadata id
                "elapsed": 15465,
                "work_package_hash": "0xc548ee6bef56853bc3be0702ab1657f088cd503f43de35d9a28552d9d7e94e66",
                "bundle_length": 384,
                "erasure_root": "0xca5bc9fa3ea72d17f9808f8589756b5b30de7d4c4d48d45e3d7edd7642ac2b7f",
                "exports_root": "0x101ccbad1251e6e9c54a86ebeb93acd77950593411cb101d52a89b26a8a6c45c",
                "exports_count": 1,
                "anchor": "0x8570f88e5849390f33516004086a9036cf1716542c5824a1aeba4c2014395401",
                "state_root": "0x18027aa2debb0cd33a51ef5d1970786d253cf1db5b7dad34b6f3bd7853b207ec",
                "beefy_root": "0xd77518649eaf0452d281e14631c353264656c6fd9b65dd71a0c8e7748cec2d24",
                "lookup_anchor": "0xa53e8edc56efb568d0585bbe0f4c44db57ea40a3d1a7b33662caa200b7367a9c",
                "lookup_anchor_slot": 1611566,
                "prerequisites": None,  # SQL null, not the string "null"
                "core_index": 0,
                "authorizer_hash": "0x0b27478648cd19b4f812f897a26976ecf312eac28508b4368d0c63ea949c7cb0",
                "auth_output": "0x",
                "segment_root_lookup": None,
                "results": (
                    '[{"service_id":2478220375,"code_hash":"0xccbea4bf12716bc7f7583dd834aac2ca1b05af8dc5be285336156d0de73d9b9e",'
                    '"payload_hash":"0x8b620d24e8e7082d3ba0ef8a673e10aa6f8c523e991dbcde8eb3c50d32b44efc","accumulate_gas":98765,'
                    '"result":{"ok":"0x000000000100000000000000"},"refine_load":{"gas_used":240,"imports":0,"extrinsic_count":1,'
                    '"extrinsic_size":36,"exports":1}},'
                    '{"service_id":1112823695,"code_hash":"0xf40e27b819519561cf8f8a33309b2453a78117a3e33fcd331a0bab714f1f9e14",'
                    '"payload_hash":"0x0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8","accumulate_gas":98765,'
                    '"result":{"ok":"0x0b27478648cd19b4f812f897a26976ecf312eac28508b4368d0c63ea949c7cb0"},"refine_load":{"gas_used":0,'
                    '"imports":0,"extrinsic_count":1,"extrinsic_size":0,"exports":0}}]'
                ),
                "num_results": 2,
                "auth_gas_used": 0,
                "codec_encoded": s["codec_encoded"],
            }
        ]
    }


def test_preimage_142_real_hash_is_blake2b_256():
    s = sample_json("142")
    assert only_rows("142") == {
        "preimages": [
            {
                "minute_file": MF,
                "minute_start": MS,
                "line_no": 1,
                "time": "2025-04-23T09:56:06.346233Z",
                "slot": 1611561,
                "team": "unknown",  # no team in this line's metadata
                "sender_id": None,
                "elapsed": None,
                "requester": 1112823695,
                # metadata h of the same line; BLAKE2b-512's first half would differ
                "preimage_hash": "0xf40e27b819519561cf8f8a33309b2453a78117a3e33fcd331a0bab714f1f9e14",
                "blob_length": 1085,
                "blob": s["json_encoded"]["blob"],
                "codec_encoded": None,
            }
        ]
    }


def test_ticket_131_reconstructed():
    s = sample_json("131")
    assert only_rows("131") == {
        "tickets": [
            {
                "minute_file": MF,
                "minute_start": MS,
                "line_no": 1,
                "time": "2025-04-23T23:33:30.553363Z",
                "slot": 1619735,
                "team": "Jam-Duna",
                "sender_id": None,  # the reference's "unknown" was a bug
                "elapsed": 420783,
                "attempt": 0,
                "signature": s["json_encoded"]["signature"],
                "codec_encoded": None,
            }
        ]
    }


CN_SENDER = "0x3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"


def test_work_package_133_reconstructed():
    s = sample_json("133")
    assert only_rows("133") == {
        "workpackages": [
            {
                "minute_file": MF,
                "minute_start": MS,
                "line_no": 1,
                "time": "2025-04-24T23:39:15.346671Z",
                "slot": 1634192,
                "team": "COLORFULNOTION",  # not in the default alias map
                "sender_id": CN_SENDER,
                "elapsed": None,
                "authorization": "0x",
                "auth_code_host": 0,
                "authorizer_code_hash": "0xc16326432b5b3213dfd1609495e13c6b276cb474d679645337e5c2c09f19b53c",
                "authorizer_params": "0x",
                "anchor": "0xa02f1352d0171ff23ab311231ba91d2b62dcd64f04295e267396ff3bf69458ff",
                "state_root": "0x375e90ef4009885876db4c1d4069978e484242075db7046b5ba4b5c85d1a238c",
                "beefy_root": "0x001b85098ef93bf9f19ae378a2349d920d3ec676f3bf6823ad821c9e3ae64092",
                "lookup_anchor": "0xbd75f1447b98bf28e72fade611f51755f41e6e524c520e07f5485bf1699b1a2a",
                "lookup_anchor_slot": 1634192,
                "prerequisites": "[]",
                "work_items": (
                    '[{"service":0,"code_hash":"0xc16326432b5b3213dfd1609495e13c6b276cb474d679645337e5c2c09f19b53c",'
                    '"payload":"0x","refine_gas_limit":1000000,"accumulate_gas_limit":100000,"import_segments":[],'
                    '"extrinsic":[],"export_count":0}]'
                ),
                "num_work_items": 1,
                "extrinsics": "[]",
                "import_segments": "[[]]",
                "justifications": "[[]]",
                "codec_encoded": s["codec_encoded"],
            }
        ]
    }


def test_segments_135_reconstructed_null_payload():
    assert only_rows("135") == {
        "segments": [
            {
                "minute_file": MF,
                "minute_start": MS,
                "line_no": 1,
                "time": "2025-04-24T23:39:15.347428Z",
                "slot": 1634192,
                "team": "COLORFULNOTION",
                "sender_id": CN_SENDER,
                "elapsed": None,
                "work_package_hash": "0x" + "0" * 64,  # metadata wph
                "num_segments": 0,
                "data": None,
                "codec_encoded": "0x00",
            }
        ]
    }


def test_assurance_141_reconstructed():
    s = sample_json("141")
    assert only_rows("141") == {
        "assurances": [
            {
                "minute_file": MF,
                "minute_start": MS,
                "line_no": 1,
                "time": "2025-04-24T23:39:00.128032Z",
                "slot": 1634190,
                "team": "COLORFULNOTION",
                "sender_id": CN_SENDER,
                "elapsed": 6092,
                "anchor": "0xe3be14f33d7593769e07b88126dbf00d440c9dc3e1e9590f3a2c936ceb684799",
                "bitfield": "0x03",
                "validator_index": 0,
                "signature": s["json_encoded"]["signature"],
                "codec_encoded": s["codec_encoded"],
            }
        ]
    }


def test_new_service_143_reconstructed():
    s = sample_json("143")
    assert only_rows("143") == {
        "services": [
            {
                "minute_file": MF,
                "minute_start": MS,
                "line_no": 1,
                "time": "2025-04-24T23:40:12.131537Z",
                "slot": 1634202,
                "team": "COLORFULNOTION",
                "sender_id": "0x5c7f34a4bd4f2d04076a8c6f9060a0c8d2c6bdd082ceb3eda7df381cb260faff",
                "elapsed": None,
                "service_index": 3073449728,
                "code_hash": "0x8b8602abfc89f7fef0d0c390b33519c11e6823ccfe53ba80aa8026d1ffb3ad04",
                "balance": 509320,
                "min_item_gas": 100,
                "min_memo_gas": 100,
                "code_size": 9200,
                "items": 2,
                "codec_encoded": s["codec_encoded"],
            }
        ]
    }


def test_segments_with_data():
    line = sample_json("135")
    line["json_encoded"] = ["AAEC", "AwQF"]
    rows, _ = derive(orjson.dumps(line) + b"\n", MF)
    assert rows["segments"][0]["num_segments"] == 2
    assert rows["segments"][0]["data"] == '["AAEC","AwQF"]'


@pytest.mark.parametrize("old, new, table", [("0", "133", "workpackages"), ("3", "135", "segments")])
def test_old_msg_type_numbers(old, new, table):
    line = sample_json(new)
    line["msg_type"] = old
    rows, summary = derive(orjson.dumps(line) + b"\n", MF)
    assert len(rows[table]) == 1 and summary.lines_by_msg_type == {old: 1}


def test_alias_map_is_configurable():
    rows, _ = derive(sample_line("141") + b"\n", MF, aliases={"COLORFULNOTION": "Colorful Notion"})
    assert rows["assurances"][0]["team"] == "Colorful Notion"


def test_block_without_elapsed_keeps_its_row():
    line = sample_json("128")
    del line["elapsed"]
    rows, summary = derive(orjson.dumps(line) + b"\n", MF)
    assert rows["blocks"][0]["elapsed"] is None and summary.rejected == 0


def test_every_table_has_a_sample():
    seen = set()
    for msg_type in ("128", "13", "255", "142", "131", "133", "135", "141", "143"):
        seen |= set(only_rows(msg_type))
    assert seen | {"servicestatistics"} == set(schema.TABLES)


def test_statistics_fast_and_general_paths_agree(monkeypatch):
    from jam_assets.core import payloads
    from jam_assets.core.generator import TOASTER, Generator

    lines = [line for line in Generator(TOASTER, seed=4).slot_lines(1_609_201) if b'"msg_type":"13"' in line]
    fast, _ = derive(b"".join(lines))
    monkeypatch.setattr(payloads, "_statistics_fast", lambda *a: None)
    general, _ = derive(b"".join(lines))
    assert len(fast["validatorstatistics"]) == 1023 and len(fast["corestatistics"]) == 341
    assert fast == general


def test_statistics_odd_shapes_take_the_general_path():
    line = sample_json("13")
    line["json_encoded"]["vals_current"][2]["blocks"] = 1.5
    rows, summary = derive(orjson.dumps(line) + b"\n", MF)
    assert (
        rows["rejected_lines"][0]["detail"]
        == "current_blocks (vals_current[validator_id].blocks) must be an integer, got 1.5"
    )
    line = sample_json("13")
    del line["json_encoded"]["vals_last"][5]["guarantees"]
    line["json_encoded"]["cores"][1]["gas_used"] = 2**62
    rows, _ = derive(orjson.dumps(line) + b"\n", MF)
    assert rows["validatorstatistics"][5]["last_guarantees"] is None
    assert rows["corestatistics"][1]["gas_used"] == 2**62


def test_statistics_records_that_are_not_plain_get_the_general_path():
    """Anything but exact keys with integer values leaves the fast path, which then agrees with the general one."""
    from jam_assets.core import payloads

    def both(edit):
        line = sample_json("13")
        edit(line["json_encoded"])
        data = orjson.dumps(line) + b"\n"
        fast, _ = derive(data, MF)
        original = payloads._statistics_fast
        payloads._statistics_fast = lambda *a: None
        try:
            general, _ = derive(data, MF)
        finally:
            payloads._statistics_fast = original
        assert fast == general
        return fast

    def rename(record, old, new):
        items = list(record.items())
        record.clear()
        record.update((new if k == old else k, v) for k, v in items)

    # A key that matches only once its digits are dropped is not that key.
    rows = both(lambda p: rename(p["vals_current"][0], "blocks", "blocks2"))
    assert rows["validatorstatistics"][0]["current_blocks"] is None
    rows = both(lambda p: rename(p["cores"][1], "imports", "imports-1"))
    assert rows["corestatistics"][1]["imports"] is None
    rows = both(lambda p: rename(p["vals_last"][3], "tickets", "3tickets"))
    assert rows["validatorstatistics"][3]["last_tickets"] is None
    # Negative and large values, reordered keys and a string value.
    rows = both(lambda p: p["vals_last"][1].update(blocks=-4, tickets=2**60))
    assert (
        rows["validatorstatistics"][1]["last_blocks"] == -4 and rows["validatorstatistics"][1]["last_tickets"] == 2**60
    )
    rows = both(lambda p: p["cores"].__setitem__(0, dict(reversed(list(p["cores"][0].items())))))
    assert len(rows["corestatistics"]) == 2
    rows = both(lambda p: p["vals_current"][2].update(guarantees="7"))
    assert rows["rejected_lines"][0]["reason"] == "bad_value"
