"""One function per msg_type: a decoded payload -> the rows it gives, as (table, row) pairs.

Rows are dicts whose keys follow `schema/<table>.json` exactly, so they serialise in schema order.
Each function receives the common columns already built (`minute_file` … `elapsed`) and the
envelope's `codec_encoded`. Shapes are checked here (an object where an object belongs, a list
where we count); scalar types are checked once per row against the schema in `transform`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from itertools import repeat
from typing import Any

import orjson

from .envelope import LineRejected, preview

Row = dict[str, Any]
# A row as a dict, or rows already serialised (the statistics fast path).
Rows = list[tuple[str, "Row | Serialized"]]
Handler = Callable[[Row, Any, dict[str, str], "str | None"], Rows]

_EMPTY: dict = {}


def _type_name(value: object) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
    }.get(type(value), type(value).__name__)


def obj(value: Any, path: str, required: bool = True) -> dict:
    if type(value) is dict:
        return value
    if value is None:
        if required:
            raise LineRejected("missing_field", f"{path} is missing")
        return _EMPTY
    raise LineRejected("bad_value", f"{path} must be an object, got {_type_name(value)} {preview(value)}")


def items(value: Any, path: str) -> list:
    """A list, or [] when absent: statistics with no services simply give no service rows."""
    if type(value) is list:
        return value
    if value is None:
        return []
    raise LineRejected("bad_value", f"{path} must be a list, got {_type_name(value)} {preview(value)}")


def count(value: Any, path: str) -> int | None:
    if value is None:
        return None
    if type(value) is list:
        return len(value)
    raise LineRejected("bad_value", f"{path} must be a list, got {_type_name(value)} {preview(value)}")


def as_json(value: Any) -> str | None:
    """Compact JSON text; SQL null (None) for JSON null, never the string "null"."""
    return None if value is None else orjson.dumps(value).decode()


def block(common: Row, payload: Any, md: dict[str, str], codec: str | None) -> Rows:
    p = obj(payload, "json_encoded")
    header = obj(p.get("header"), "json_encoded.header")
    extrinsic = obj(p.get("extrinsic"), "json_encoded.extrinsic", required=False)
    disputes = obj(extrinsic.get("disputes"), "json_encoded.extrinsic.disputes", required=False)
    row = {
        "minute_file": common["minute_file"],
        "minute_start": common["minute_start"],
        "line_no": common["line_no"],
        "time": common["time"],
        "slot": header.get("slot"),
        "team": common["team"],
        "sender_id": common["sender_id"],
        "elapsed": common["elapsed"],
        "parent": header.get("parent"),
        "parent_state_root": header.get("parent_state_root"),
        "extrinsic_hash": header.get("extrinsic_hash"),
        "header_slot": header.get("slot"),
        "author_index": header.get("author_index"),
        "entropy_source": header.get("entropy_source"),
        "seal": header.get("seal"),
        "num_tickets": count(extrinsic.get("tickets"), "extrinsic.tickets"),
        "num_preimages": count(extrinsic.get("preimages"), "extrinsic.preimages"),
        "num_guarantees": count(extrinsic.get("guarantees"), "extrinsic.guarantees"),
        "num_assurances": count(extrinsic.get("assurances"), "extrinsic.assurances"),
        "num_verdicts": count(disputes.get("verdicts"), "extrinsic.disputes.verdicts"),
        "num_culprits": count(disputes.get("culprits"), "extrinsic.disputes.culprits"),
        "num_faults": count(disputes.get("faults"), "extrinsic.disputes.faults"),
        "codec_encoded": codec,
    }
    return [("blocks", row)]


_VALIDATOR_FIELDS = ("blocks", "tickets", "pre_images", "pre_images_size", "guarantees", "assurances")
_VALIDATOR_COLUMNS = (
    "validator_id",
    *(f"current_{f}" for f in _VALIDATOR_FIELDS),
    *(f"last_{f}" for f in _VALIDATOR_FIELDS),
)
_CORE_FIELDS = (
    "da_load",
    "popularity",
    "imports",
    "exports",
    "extrinsic_size",
    "extrinsic_count",
    "bundle_size",
    "gas_used",
)
_CORE_COLUMNS = ("core", *_CORE_FIELDS)
_SERVICE_FIELDS = (
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
)
_SERVICE_COLUMNS = ("service_id", *_SERVICE_FIELDS)


def _record_values(record: Any, fields: tuple[str, ...], path: str) -> tuple:
    if type(record) is not dict:
        record = obj(record, path, required=False)
    # The usual case, a record with exactly the expected keys in order, costs one C-level pass.
    if tuple(record) == fields:
        return tuple(record.values())
    return tuple(record.get(f) for f in fields)


class Serialized:
    """Rows already serialised as JSONL (validated while serialising), `count` of them."""

    __slots__ = ("data", "count")

    def __init__(self, data: bytes, count: int):
        self.data = data
        self.count = count


# Statistics lines carry V + V + C (+ services) flat records of integers: at full scale 2,387 of
# them per line. The fast path below checks and turns them into rows without a Python object per
# record: the payload is serialised once, checked in C against the exact expected shape, and the
# rows are cut from that JSON.
_STATS_KEYS = ("vals_current", "vals_last", "cores", "services")
_STRICT = orjson.OPT_STRICT_INTEGER  # integers beyond 2^53 raise; the general path then checks their range
_NUMBER_BYTES = b"0123456789-"
# Every byte as its class: a name byte (letter, `_`, `"`) as `a`, a number byte as `0`, others `,`.
_CLASSES = bytes(
    ord("a") if chr(b).isalpha() or chr(b) in '_"' else ord("0") if b in _NUMBER_BYTES else ord(",") for b in range(256)
)


def _record(fields: tuple[str, ...]) -> bytes:
    return b"{" + b",".join(b'"' + f.encode() + b'":' for f in fields) + b"}"


_RECORDS = (
    _record(_VALIDATOR_FIELDS),
    _record(_VALIDATOR_FIELDS),
    _record(_CORE_FIELDS),
    b'{"id":,"record":' + _record(_SERVICE_FIELDS) + b"}",
)
_SKELETONS: dict[tuple[int, ...], bytes] = {}


def _skeleton(counts: tuple[int, ...]) -> bytes:
    """The payload's JSON with every number taken out, for these record counts."""
    skeleton = _SKELETONS.get(counts)
    if skeleton is None:
        if len(_SKELETONS) > 1024:
            _SKELETONS.clear()
        lists = (b"[" + b",".join([record] * n) + b"]" for record, n in zip(_RECORDS, counts))
        skeleton = _SKELETONS[counts] = (
            b"{" + b",".join(b'"' + k.encode() + b'":' + v for k, v in zip(_STATS_KEYS, lists)) + b"}"
        )
    return skeleton


_INDEX = [str(i).encode() + b"," for i in range(4096)]


def _index(n: int) -> list[bytes]:
    return _INDEX[:n] if n <= len(_INDEX) else [str(i).encode() + b"," for i in range(n)]


def _pieces(data: bytes, close: bytes) -> list[bytes]:
    """The records of a list's JSON without their braces (`"a":1,"b":2` each); `close` ends a record."""
    return data[2 : -len(close) - 1].split(close + b",{")


_LIST_KEYS = tuple(b'"' + k.encode() + b'":' for k in _STATS_KEYS)


def _lists(data: bytes) -> list[bytes]:
    """The JSON of each record list of a checked payload, `{"vals_current":[…],…,"services":[…]}`."""
    starts, at = [], 0
    for key in _LIST_KEYS:
        at = data.index(key, at)
        starts.append(at)
    ends = [s - 1 for s in starts[1:]] + [len(data) - 1]  # before the next key's comma, or the closing brace
    return [data[start + len(key) : end] for key, start, end in zip(_LIST_KEYS, starts, ends)]


def _statistics_fast(head: bytes, p: dict) -> Rows | None:
    """All statistics rows as JSONL, or None when the payload is not plain (the general path then
    checks each value and says what is wrong).

    `head` is the common columns as an unclosed JSON object (`{"minute_file":…,"elapsed":…,`).
    """
    if tuple(p) != _STATS_KEYS:
        return None
    try:
        counts = tuple(map(len, p.values()))
        data = orjson.dumps(p, option=_STRICT)
    except (TypeError, orjson.JSONEncodeError):
        return None
    # With the numbers taken out, the JSON must be the expected keys and punctuation exactly: no
    # float, string, null, boolean, nested value or other key survives that. A number byte right
    # after a name byte would be a digit inside a key (values follow `:`), such as "blocks1".
    if counts[0] != counts[1] or data.translate(None, _NUMBER_BYTES) != _skeleton(counts):
        return None
    if b"a0" in data.translate(_CLASSES):
        return None
    n_validators, _, n_cores, n_services = counts
    cur, prev, core_list, service_list = _lists(data)
    out: Rows = []
    if n_validators:
        cur = cur.replace(b'{"', b'{"current_').replace(b',"', b',"current_')
        prev = prev.replace(b'{"', b'{"last_').replace(b',"', b',"last_')
        rows = map(
            b"".join,
            zip(
                repeat(head + b'"validator_id":'),
                _index(n_validators),
                _pieces(cur, b"}"),
                repeat(b","),
                _pieces(prev, b"}"),
                repeat(b"}\n"),
            ),
        )
        out.append(("validatorstatistics", Serialized(b"".join(rows), n_validators)))
    if n_cores:
        rows = map(b"".join, zip(repeat(head + b'"core":'), _index(n_cores), _pieces(core_list, b"}"), repeat(b"}\n")))
        out.append(("corestatistics", Serialized(b"".join(rows), n_cores)))
    if n_services:
        services = service_list.replace(b'{"id":', b'{"service_id":').replace(b',"record":{', b",")
        rows = map(b"".join, zip(repeat(head), _pieces(services, b"}}"), repeat(b"}\n")))
        out.append(("servicestatistics", Serialized(b"".join(rows), n_services)))
    return out


def statistics(common: Row, payload: Any, md: dict[str, str], codec: str | None) -> Rows:
    p = obj(payload, "json_encoded")
    fast = _statistics_fast(orjson.dumps(common)[:-1] + b",", p)
    if fast is not None:
        return fast
    current = items(p.get("vals_current"), "json_encoded.vals_current")
    last = items(p.get("vals_last"), "json_encoded.vals_last")
    cores = items(p.get("cores"), "json_encoded.cores")
    services = items(p.get("services"), "json_encoded.services")
    head = tuple(common.items())
    rows: Rows = []
    append = rows.append
    # vals_current and vals_last should both hold V records; if one is short, its columns are null
    # rather than the other's records being dropped.
    no_record = (None,) * len(_VALIDATOR_FIELDS)
    for i in range(max(len(current), len(last))):
        cur = _record_values(current[i], _VALIDATOR_FIELDS, f"vals_current[{i}]") if i < len(current) else no_record
        prev = _record_values(last[i], _VALIDATOR_FIELDS, f"vals_last[{i}]") if i < len(last) else no_record
        row = dict(head)
        row.update(zip(_VALIDATOR_COLUMNS, (i, *cur, *prev)))
        append(("validatorstatistics", row))
    for i, record in enumerate(cores):
        row = dict(head)
        row.update(zip(_CORE_COLUMNS, (i, *_record_values(record, _CORE_FIELDS, f"cores[{i}]"))))
        append(("corestatistics", row))
    for i, service in enumerate(services):
        service = obj(service, f"services[{i}]")
        record = obj(service.get("record"), f"services[{i}].record", required=False)
        row = dict(head)
        row.update(
            zip(
                _SERVICE_COLUMNS, (service.get("id"), *_record_values(record, _SERVICE_FIELDS, f"services[{i}].record"))
            )
        )
        append(("servicestatistics", row))
    return rows


def work_report(common: Row, payload: Any, md: dict[str, str], codec: str | None) -> Rows:
    p = obj(payload, "json_encoded")
    spec = obj(p.get("package_spec"), "json_encoded.package_spec")
    context = obj(p.get("context"), "json_encoded.context", required=False)
    results = p.get("results")
    row = {
        **common,
        "work_package_hash": spec.get("hash"),
        "bundle_length": spec.get("length"),
        "erasure_root": spec.get("erasure_root"),
        "exports_root": spec.get("exports_root"),
        "exports_count": spec.get("exports_count"),
        "anchor": context.get("anchor"),
        "state_root": context.get("state_root"),
        "beefy_root": context.get("beefy_root"),
        "lookup_anchor": context.get("lookup_anchor"),
        "lookup_anchor_slot": context.get("lookup_anchor_slot"),
        "prerequisites": as_json(context.get("prerequisites")),
        "core_index": p.get("core_index"),
        "authorizer_hash": p.get("authorizer_hash"),
        "auth_output": p.get("auth_output"),
        "segment_root_lookup": as_json(p.get("segment_root_lookup")),
        "results": as_json(results),
        "num_results": count(results, "json_encoded.results"),
        "auth_gas_used": p.get("auth_gas_used"),
        "codec_encoded": codec,
    }
    return [("workreports", row)]


def blob_bytes(blob: str) -> bytes | None:
    """The bytes of a hex blob, with or without `0x`; None when it is not hex (the format check reports it)."""
    digits = blob[2:] if blob[:2] in ("0x", "0X") else blob
    # bytes.fromhex skips white space; a blob with any is not hex. (isalnum is one C pass.)
    if digits and not (digits.isascii() and digits.isalnum()):
        return None
    try:
        return bytes.fromhex(digits)
    except ValueError:
        return None


def blake2b_256(data: bytes) -> str:
    """JAM's hash: BLAKE2b with a 32-byte digest (not the first half of BLAKE2b-512)."""
    return "0x" + hashlib.blake2b(data, digest_size=32).hexdigest()


def preimage(common: Row, payload: Any, md: dict[str, str], codec: str | None) -> Rows:
    p = obj(payload, "json_encoded")
    blob = p.get("blob")
    data = blob_bytes(blob) if type(blob) is str else None
    row = {
        **common,
        "requester": p.get("requester"),
        "preimage_hash": None if data is None else blake2b_256(data),
        "blob_length": None if data is None else len(data),
        "blob": blob,
        "codec_encoded": codec,
    }
    return [("preimages", row)]


def assurance(common: Row, payload: Any, md: dict[str, str], codec: str | None) -> Rows:
    p = obj(payload, "json_encoded")
    row = {
        **common,
        "anchor": p.get("anchor"),
        "bitfield": p.get("bitfield"),
        "validator_index": p.get("validator_index"),
        "signature": p.get("signature"),
        "codec_encoded": codec,
    }
    return [("assurances", row)]


def ticket(common: Row, payload: Any, md: dict[str, str], codec: str | None) -> Rows:
    p = obj(payload, "json_encoded")
    row = {**common, "attempt": p.get("attempt"), "signature": p.get("signature"), "codec_encoded": codec}
    return [("tickets", row)]


def work_package(common: Row, payload: Any, md: dict[str, str], codec: str | None) -> Rows:
    p = obj(payload, "json_encoded")
    wp = obj(p.get("work_package"), "json_encoded.work_package")
    authorizer = obj(wp.get("authorizer"), "work_package.authorizer", required=False)
    context = obj(wp.get("context"), "work_package.context", required=False)
    work_items = wp.get("items")
    row = {
        **common,
        "authorization": wp.get("authorization"),
        "auth_code_host": wp.get("auth_code_host"),
        "authorizer_code_hash": authorizer.get("code_hash"),
        "authorizer_params": authorizer.get("params"),
        "anchor": context.get("anchor"),
        "state_root": context.get("state_root"),
        "beefy_root": context.get("beefy_root"),
        "lookup_anchor": context.get("lookup_anchor"),
        "lookup_anchor_slot": context.get("lookup_anchor_slot"),
        "prerequisites": as_json(context.get("prerequisites")),
        "work_items": as_json(work_items),
        "num_work_items": count(work_items, "work_package.items"),
        "extrinsics": as_json(p.get("extrinsics")),
        "import_segments": as_json(p.get("import_segments")),
        "justifications": as_json(p.get("justifications")),
        "codec_encoded": codec,
    }
    return [("workpackages", row)]


def new_service(common: Row, payload: Any, md: dict[str, str], codec: str | None) -> Rows:
    p = obj(payload, "json_encoded")
    row = {
        **common,
        "service_index": p.get("service_index"),
        "code_hash": p.get("code_hash"),
        "balance": p.get("balance"),
        "min_item_gas": p.get("min_item_gas"),
        "min_memo_gas": p.get("min_memo_gas"),
        "code_size": p.get("code_size"),
        "items": p.get("items"),
        "codec_encoded": codec,
    }
    return [("services", row)]


def segments(common: Row, payload: Any, md: dict[str, str], codec: str | None) -> Rows:
    # A null payload is a real message (no segments exported), not a missing one.
    num = 0 if payload is None else count(payload, "json_encoded")
    row = {
        **common,
        "work_package_hash": md.get("wph"),
        "num_segments": num,
        "data": as_json(payload),
        "codec_encoded": codec,
    }
    return [("segments", row)]


# What each msg_type is, for people: raw_log's metadata shows `block (128)`, not `128`.
MSG_TYPE_NAMES: dict[str, str] = {
    "128": "block",
    "13": "statistics",
    "255": "work report",
    "142": "preimage",
    "141": "assurance",
    "131": "ticket",
    "133": "work package",
    "0": "work package",
    "143": "new service",
    "135": "segments",
    "3": "segments",
}


def msg_type_names(counts: dict[str, int]) -> dict[str, int]:
    """Line counts by msg_type keyed `name (number)`, numerically ordered; unknown types say so."""

    def label(code: str) -> str:
        if not code.isdigit():
            return code  # "unreadable": the line's msg_type could not be read
        return f"{MSG_TYPE_NAMES.get(code, 'unknown')} ({code})"

    return {
        label(k): counts[k] for k in sorted(counts, key=lambda c: (not c.isdigit(), int(c) if c.isdigit() else 0, c))
    }


HANDLERS: dict[str, Handler] = {
    "128": block,
    "13": statistics,
    "255": work_report,
    "142": preimage,
    "141": assurance,
    "131": ticket,
    "133": work_package,
    "0": work_package,  # the old docs' number for work packages
    "143": new_service,
    "135": segments,
    "3": segments,  # the old docs' number for segments
}
