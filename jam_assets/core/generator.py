"""Realistic synthetic minute files, for the bundled sample tree, the tests and the benchmarks.

Two profiles:
- `tiny`: the April 2025 testnet (V=6 validators, C=2 cores, 6-second slots). Each slot's author
  sends its block (128) and its statistics (13); work reports (255) and preimages (142) come now
  and then. That is the mix the real logs hold.
- `toaster`: a full network (V=1023, C=341). Per slot: the author's block and statistics
  (1,023 validator and 341 core records), a work report and a work package per core, an
  assurance per validator, exported segments per work package, tickets early in the epoch, and an
  occasional preimage and new service.

Output is deterministic for a seed. Payload shapes follow FORMAT.md; `codec_encoded` is random
bytes of a realistic length whose size matches metadata `codec_len`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from .envelope import JAM_EPOCH, SLOT_SECONDS


@dataclass(frozen=True)
class Profile:
    name: str
    validators: int
    cores: int
    services: int
    work_report_rate: float  # per core per slot
    assurance_rate: float  # per validator per slot
    work_package_rate: float  # per core per slot
    ticket_rate: float  # per slot
    preimage_rate: float  # per slot
    new_service_rate: float  # per slot
    teams: tuple[str, ...]


TINY = Profile(
    "tiny",
    validators=6,
    cores=2,
    services=2,
    work_report_rate=0.15,
    assurance_rate=0.0,
    work_package_rate=0.0,
    ticket_rate=0.0,
    preimage_rate=0.02,
    new_service_rate=0.0,
    teams=("JAMDUNA", "JAMDUNA", "COLORFULNOTION", "COLORFULNOTION", "SIM_A", "SIM_B"),
)
TOASTER = Profile(
    "toaster",
    validators=1023,
    cores=341,
    services=24,
    work_report_rate=1.0,
    assurance_rate=1.0,
    work_package_rate=1.0,
    ticket_rate=3.4,
    preimage_rate=0.1,
    new_service_rate=0.02,
    teams=tuple(f"SIM_T{i:02d}" for i in range(32)),
)
PROFILES = {p.name: p for p in (TINY, TOASTER)}

SEGMENT_BYTES = 4104


class Generator:
    def __init__(self, profile: Profile, seed: int = 0):
        self.p = profile
        self.rng = random.Random(seed)
        self.keys = [self._hex(32) for _ in range(profile.validators)]
        self.service_ids = [self.rng.randrange(2**32) for _ in range(profile.services)]
        self.parent = self._hex(32)

    def _hex(self, n: int) -> str:
        return "0x" + self.rng.randbytes(n).hex()

    def _team(self, validator: int) -> str:
        return self.p.teams[validator % len(self.p.teams)]

    def _line(
        self,
        when: datetime,
        msg_type: str,
        payload: object,
        validator: int,
        extra_md: str = "",
        elapsed: int | None = None,
        codec_len: int | None = None,
        sender: bool = True,
    ) -> bytes:
        line: dict = {"time": _rfc3339(when, self.rng), "msg_type": msg_type}
        if sender:
            line["sender_id"] = self.keys[validator]
        line["json_encoded"] = payload
        md = f"team={self._team(validator)}"
        if codec_len is not None:
            md += f"|codec_len={codec_len}"
        line["metadata"] = md + extra_md
        if elapsed is not None:
            line["elapsed"] = elapsed
        if codec_len is not None:
            line["codec_encoded"] = self._hex(codec_len)
        return orjson.dumps(line) + b"\n"

    def block(self, when: datetime, slot: int, author: int) -> bytes:
        header = {
            "parent": self.parent,
            "parent_state_root": self._hex(32),
            "extrinsic_hash": self._hex(32),
            "slot": slot,
            "epoch_mark": None,
            "tickets_mark": None,
            "offenders_mark": [],
            "author_index": author,
            "entropy_source": self._hex(96),
            "seal": self._hex(96),
        }
        guarantees = self.rng.randrange(0, max(2, self.p.cores // 100 + 2))
        extrinsic = {
            "tickets": [],
            "preimages": [],
            "guarantees": [{}] * guarantees,
            "assurances": [],
            "disputes": {"verdicts": [], "culprits": [], "faults": []},
        }
        self.parent = self._hex(32)
        return self._line(
            when,
            "128",
            {"header": header, "extrinsic": extrinsic},
            author,
            elapsed=self.rng.randrange(40_000, 150_000),
            codec_len=304 + 40 * guarantees,
        )

    def statistics(self, when: datetime, author: int) -> bytes:
        r = self.rng.randrange

        def vals():
            return [
                {
                    "blocks": r(0, 5),
                    "tickets": r(0, 3),
                    "pre_images": r(0, 2),
                    "pre_images_size": r(0, 5000),
                    "guarantees": r(0, 4),
                    "assurances": r(0, 10),
                }
                for _ in range(self.p.validators)
            ]

        cores = [
            {
                "da_load": r(0, 50_000),
                "popularity": r(0, 10),
                "imports": r(0, 5),
                "exports": r(0, 5),
                "extrinsic_size": r(0, 2000),
                "extrinsic_count": r(0, 4),
                "bundle_size": r(0, 10_000),
                "gas_used": r(0, 5_000_000_000),
            }
            for _ in range(self.p.cores)
        ]
        services = [
            {
                "id": sid,
                "record": {
                    "provided_count": r(0, 3),
                    "provided_size": r(0, 4000),
                    "refinement_count": r(0, 3),
                    "refinement_gas_used": r(0, 10**10),
                    "imports": r(0, 5),
                    "exports": r(0, 5),
                    "extrinsic_size": r(0, 2000),
                    "extrinsic_count": r(0, 3),
                    "accumulate_count": r(0, 3),
                    "accumulate_gas_used": r(0, 10**9),
                    "on_transfers_count": 0,
                    "on_transfers_gas_used": 0,
                },
            }
            for sid in self.service_ids
            if r(0, 3) == 0
        ]
        payload = {"vals_current": vals(), "vals_last": vals(), "cores": cores, "services": services}
        return self._line(when, "13", payload, author, codec_len=48 * self.p.validators * 2 + 64 * self.p.cores + 1)

    def work_report(self, when: datetime, core: int, guarantor: int, slot: int) -> bytes:
        results = [
            {
                "service_id": self.rng.choice(self.service_ids),
                "code_hash": self._hex(32),
                "payload_hash": self._hex(32),
                "accumulate_gas": self.rng.randrange(10_000, 200_000),
                "result": {"ok": self._hex(self.rng.randrange(0, 40))},
                "refine_load": {
                    "gas_used": self.rng.randrange(0, 10_000),
                    "imports": 0,
                    "extrinsic_count": 1,
                    "extrinsic_size": 36,
                    "exports": self.rng.randrange(0, 3),
                },
            }
            for _ in range(self.rng.randrange(1, 3))
        ]
        payload = {
            "package_spec": {
                "hash": self._hex(32),
                "length": self.rng.randrange(200, 5000),
                "erasure_root": self._hex(32),
                "exports_root": self._hex(32),
                "exports_count": self.rng.randrange(0, 3),
            },
            "context": {
                "anchor": self._hex(32),
                "state_root": self._hex(32),
                "beefy_root": self._hex(32),
                "lookup_anchor": self._hex(32),
                "lookup_anchor_slot": slot - self.rng.randrange(0, 5),
                "prerequisites": None,
            },
            "core_index": core,
            "authorizer_hash": self._hex(32),
            "auth_output": "0x",
            "segment_root_lookup": None,
            "results": results,
            "auth_gas_used": 0,
        }
        return self._line(
            when,
            "255",
            payload,
            guarantor,
            f"|role=Guarantor|numSig=3|id={self.keys[guarantor]}",
            elapsed=self.rng.randrange(5_000, 60_000),
            codec_len=300 + 180 * len(results),
            sender=False,
        )

    def preimage(self, when: datetime, validator: int) -> bytes:
        blob = self.rng.randbytes(self.rng.randrange(64, 4096))
        h = "0x" + hashlib.blake2b(blob, digest_size=32).hexdigest()
        sid = self.rng.choice(self.service_ids)
        payload = {"requester": sid, "blob": "0x" + blob.hex()}
        line = {
            "time": _rfc3339(when, self.rng),
            "msg_type": "142",
            "json_encoded": payload,
            "metadata": f"blob_len={len(blob)}|h={h}|a_p={self._hex(32)}|s={sid}",
        }
        return orjson.dumps(line) + b"\n"

    def assurance(self, when: datetime, validator: int) -> bytes:
        payload = {
            "anchor": self._hex(32),
            "bitfield": self._hex((self.p.cores + 7) // 8),
            "validator_index": validator,
            "signature": self._hex(64),
        }
        return self._line(
            when,
            "141",
            payload,
            validator,
            elapsed=self.rng.randrange(2_000, 20_000),
            codec_len=32 + (self.p.cores + 7) // 8 + 2 + 64,
        )

    def ticket(self, when: datetime, validator: int) -> bytes:
        payload = {"attempt": self.rng.randrange(0, 2), "signature": self._hex(784)}
        return self._line(when, "131", payload, validator, elapsed=self.rng.randrange(200_000, 600_000), codec_len=785)

    def work_package(self, when: datetime, validator: int, slot: int) -> bytes:
        items = [
            {
                "service": self.rng.choice(self.service_ids),
                "code_hash": self._hex(32),
                "payload": self._hex(self.rng.randrange(0, 64)),
                "refine_gas_limit": 1_000_000,
                "accumulate_gas_limit": 100_000,
                "import_segments": [],
                "extrinsic": [],
                "export_count": self.rng.randrange(0, 3),
            }
            for _ in range(self.rng.randrange(1, 3))
        ]
        payload = {
            "work_package": {
                "authorization": "0x",
                "auth_code_host": 0,
                "authorizer": {"code_hash": self._hex(32), "params": "0x"},
                "context": {
                    "anchor": self._hex(32),
                    "state_root": self._hex(32),
                    "beefy_root": self._hex(32),
                    "lookup_anchor": self._hex(32),
                    "lookup_anchor_slot": slot,
                    "prerequisites": [],
                },
                "items": items,
            },
            "extrinsics": [],
            "import_segments": [[] for _ in items],
            "justifications": [[] for _ in items],
        }
        return self._line(when, "133", payload, validator, codec_len=200 + 100 * len(items))

    def segments(self, when: datetime, validator: int) -> bytes:
        n = self.rng.randrange(0, 4)
        data = [base64.b64encode(self.rng.randbytes(SEGMENT_BYTES)).decode() for _ in range(n)] if n else None
        md = f"|wph={self._hex(32)}|c={self.rng.randrange(self.p.cores)}|len={n}"
        return self._line(when, "135", data, validator, md, codec_len=1 + n * SEGMENT_BYTES)

    def new_service(self, when: datetime, validator: int) -> bytes:
        payload = {
            "service_index": self.rng.randrange(2**32),
            "code_hash": self._hex(32),
            "balance": self.rng.randrange(10**6),
            "min_item_gas": 100,
            "min_memo_gas": 100,
            "code_size": self.rng.randrange(1000, 20000),
            "items": 2,
        }
        return self._line(when, "143", payload, validator, codec_len=119)

    def _happens(self, rate: float) -> int:
        """How many events of a per-slot rate occur this slot."""
        whole = int(rate)
        return whole + (self.rng.random() < rate - whole)

    def slot_lines(self, slot: int) -> Iterator[bytes]:
        p = self.p
        start = datetime.fromtimestamp(JAM_EPOCH + slot * SLOT_SECONDS, UTC)

        def at():
            return start + timedelta(microseconds=self.rng.randrange(0, SLOT_SECONDS * 1_000_000 - 1))

        author = self.rng.randrange(p.validators)
        # The author sends its block, then its statistics, a fraction of a millisecond apart.
        authored = start + timedelta(microseconds=self.rng.randrange(0, 400_000))
        yield self.block(authored, slot, author)
        yield self.statistics(authored + timedelta(microseconds=120), author)
        for core in range(p.cores):
            if self._happens(p.work_package_rate):
                v = self.rng.randrange(p.validators)
                yield self.work_package(at(), v, slot)
                yield self.segments(at(), v)
            if self._happens(p.work_report_rate):
                yield self.work_report(at(), core, self.rng.randrange(p.validators), slot)
        if p.assurance_rate:
            for v in range(p.validators):
                if self._happens(p.assurance_rate):
                    yield self.assurance(at(), v)
        for _ in range(self._happens(p.ticket_rate)):
            yield self.ticket(at(), self.rng.randrange(p.validators))
        for _ in range(self._happens(p.preimage_rate)):
            yield self.preimage(at(), self.rng.randrange(p.validators))
        for _ in range(self._happens(p.new_service_rate)):
            yield self.new_service(at(), self.rng.randrange(p.validators))

    def minute_lines(self, minute: datetime) -> list[bytes]:
        """The lines of the minute file for `minute`, in arrival order."""
        first = -(-(int(minute.timestamp()) - JAM_EPOCH) // SLOT_SECONDS)
        lines = []
        for slot in range(first, first + 60 // SLOT_SECONDS):
            lines.extend(self.slot_lines(slot))
        lines.sort(key=lambda line: line[9:39])  # by "time" (always the first key): receive order
        lo, hi = minute.strftime("%Y-%m-%dT%H:%M"), (minute + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M")
        return [line for line in lines if lo <= line[9:25].decode() < hi]

    def write_minute(self, root: Path, minute: datetime) -> Path:
        path = root / f"{minute:%Y/%m/%d/%H%M}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(self.minute_lines(minute)))
        return path

    def write_file_of_size(self, path: Path, target_bytes: int, start: datetime) -> int:
        """One file of at least `target_bytes`, from consecutive slots (for throughput benchmarks)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        slot = (int(start.timestamp()) - JAM_EPOCH) // SLOT_SECONDS
        written = 0
        with path.open("wb", buffering=1 << 22) as f:
            while written < target_bytes:
                for line in self.slot_lines(slot):
                    f.write(line)
                    written += len(line)
                slot += 1
        return written


def _rfc3339(when: datetime, rng: random.Random) -> str:
    """Nanosecond RFC 3339 with trailing zeros trimmed, as the nodes send it."""
    nanos = f"{when.microsecond:06d}{rng.randrange(1000):03d}".rstrip("0")
    return f"{when:%Y-%m-%dT%H:%M:%S}" + (f".{nanos}" if nanos else "") + "Z"


def write_minutes(root: Path, profile: Profile, start: datetime, minutes: int, seed: int = 0) -> list[Path]:
    gen = Generator(profile, seed)
    return [gen.write_minute(root, start + timedelta(minutes=i)) for i in range(minutes)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jam_assets.core.generator", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("out", type=Path, help="log root to write YYYY/MM/DD/HHMM.log files under")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="tiny")
    parser.add_argument("--start", default="2025-04-23T06:00", help="first minute, UTC (default %(default)s)")
    parser.add_argument("--minutes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        start = datetime.fromisoformat(args.start).replace(tzinfo=UTC, second=0, microsecond=0)
    except ValueError:
        parser.error(f"--start {args.start!r} is not an ISO date and time such as 2025-04-23T06:00")
    for path in write_minutes(args.out, PROFILES[args.profile], start, args.minutes, args.seed):
        print(path, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
