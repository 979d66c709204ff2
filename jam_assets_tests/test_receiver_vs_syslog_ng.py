"""The receiver against syslog-ng itself: the same traffic to both, byte-identical minute files.

One private syslog-ng runs jam-etl's configuration (jam_assets_tests/syslog_ng.py); one receiver runs
beside it. Each case sends the same connections, one after the other, to a syslog-ng source and to
the receiver's single syslog port, waits for both to settle, and compares what each appended to
which minute file: the same keys and the same bytes. Cases are sent within one minute (a case that
would straddle a minute boundary waits for the next minute), and every timestamp in them is "now",
because syslog-ng names a file by the message's own timestamp where the receiver uses its clock.

Which syslog-ng source a case goes to: `readme` (the README's tcp() source) for RFC 3164 over newline
framing, which is what Go's log/syslog, the Rust syslog crate, Python's SysLogHandler and
`logger --rfc3164` send; `rfc5424` for RFC 5424 over newline framing (`logger --rfc5424`, logger's
default) and `framed` for octet counting, two kinds of traffic the README's source loses entirely
(test_differences_from_jam_etls_syslog_ng).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from .helpers import sample_line
from .receiver_helpers import LOOPBACK, minute_files, octet_frame, running_receiver, send_syslog
from .syslog_ng import syslog_ng_binary, syslog_ng_server

pytestmark = [
    pytest.mark.slow,  # a syslog-ng and a receiver process: not in `make test-fast`
    pytest.mark.skipif(
        syslog_ng_binary() is None,
        reason="syslog-ng is not installed (make test installs it: scripts/ensure-syslog-ng)",
    ),
]

MB = 1024 * 1024
HOST = socket.gethostname()


@pytest.fixture(scope="module")
def peers(tmp_path_factory):
    with syslog_ng_server() as sng, running_receiver(tmp_path_factory.mktemp("receiver") / "logs") as rx:
        yield sng, rx


def _sizes(root) -> dict[str, int]:
    return {key: len(data) for key, data in minute_files(root).items()}


def _appended(root, before: dict[str, int]) -> dict[str, bytes]:
    return {
        key: data[before.get(key, 0) :] for key, data in minute_files(root).items() if len(data) > before.get(key, 0)
    }


def _total(root, before: dict[str, int]) -> int:
    return sum(len(v) for v in _appended(root, before).values())


def _settle(sng_root, rx_root, before_s, before_r, timeout: float = 20.0) -> None:
    """Waits until both have stopped writing: equal amounts stable for 0.2 s, or anything stable for 0.6 s."""
    deadline = time.monotonic() + timeout
    last = None
    since = time.monotonic()
    while time.monotonic() < deadline:
        now = (_total(sng_root, before_s), _total(rx_root, before_r))
        if now != last:
            last, since = now, time.monotonic()
        quiet = time.monotonic() - since
        if (now[0] == now[1] and quiet > 0.2) or quiet > 0.6:
            return
        time.sleep(0.02)


def _within_one_minute(seconds: float) -> None:
    """Waits for the next minute if fewer than `seconds` are left in this one."""
    now = time.time()
    left = 60 - now % 60
    if left < seconds:
        time.sleep(left + 0.05)


def run_case(peers, source: str, connections, seconds: float = 3.0) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """Sends each connection to syslog-ng's `source` and to the receiver; returns what each appended."""
    sng, rx = peers
    _within_one_minute(seconds)
    before_s, before_r = _sizes(sng.roots[source]), _sizes(rx.log_dir)
    for connection in connections:
        mid_s, mid_r = _sizes(sng.roots[source]), _sizes(rx.log_dir)
        if isinstance(connection, Raw):
            data = connection.make()  # made now (its timestamps too), the same bytes for both
            send_syslog(sng.ports[source], data)
            send_syslog(rx.ports["syslog"], data)
        else:
            connection(sng.ports[source])
            connection(rx.ports["syslog"])
        _settle(sng.roots[source], rx.log_dir, mid_s, mid_r)
    return _appended(sng.roots[source], before_s), _appended(rx.log_dir, before_r)


# -- what the clients send ---------------------------------------------------------------------------


class Raw:
    """One connection's bytes, made when the case runs (so "now" in them is now)."""

    def __init__(self, make):
        self.make = make


def raw(data: bytes | None = None, make=None) -> Raw:
    return Raw(make or (lambda: data))


def go_log_syslog(*messages: bytes, tag: str = "jamtart"):
    """Go's log/syslog over TCP: `<PRI>RFC3339 hostname tag[pid]: msg`, plus LF unless msg ends in one."""

    def send(port: int) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ").encode()
        frames = [
            b"<14>%s %s %s[%d]: %s%s"
            % (stamp, HOST.encode(), tag.encode(), os.getpid(), m, b"" if m.endswith(b"\n") else b"\n")
            for m in messages
        ]
        send_syslog(port, b"".join(frames))

    return send


def rust_syslog(*messages: bytes, terminate: bool):
    """The Rust syslog crate 6.x, Formatter3164 without hostname: `<PRI>Mmm dd hh:mm:ss jamtart[0]: msg`.

    It adds no terminator over TCP, so the README snippet's one message ends when the logger is
    dropped (the connection closes); several messages on one connection need a LF each.
    """

    def send(port: int) -> None:
        stamp = datetime.now(UTC).strftime("%b %d %H:%M:%S").encode()
        send_syslog(
            port, b"".join(b"<14>%s jamtart[0]: %s%s" % (stamp, m, b"\n" if terminate else b"") for m in messages)
        )

    return send


def logger(*args: str, stdin: bytes = b""):
    """util-linux logger over TCP (it sends each stdin line as one message)."""

    def send(port: int) -> None:
        subprocess.run(["logger", "--tcp", "-n", LOOPBACK, "-P", str(port), *args], input=stdin, check=True)

    return send


def syslog_handler(*messages: str, ident: str = "jamtart: "):
    """Python's logging.handlers.SysLogHandler over TCP: `<PRI>ident msg` ended by NUL, no timestamp."""

    def send(port: int) -> None:
        handler = logging.handlers.SysLogHandler(address=(LOOPBACK, port), socktype=socket.SOCK_STREAM)
        handler.ident = ident
        record_logger = logging.Logger(f"jam-test-{port}")
        record_logger.addHandler(handler)
        for m in messages:
            record_logger.info(m)
        handler.close()

    return send


def _bsd_now() -> bytes:
    return datetime.now(UTC).strftime("%b %e %H:%M:%S").encode()


def _iso_now(offset_hours: int = 0, fraction: bool = True) -> bytes:
    moment = datetime.now(timezone(timedelta(hours=offset_hours)))
    text = moment.isoformat(timespec="microseconds" if fraction else "seconds")
    return text.encode()


def header_corpus() -> bytes:
    """RFC 3164 header shapes (and near misses) that syslog-ng's parser tells apart, all stamped now."""
    now = datetime.now(UTC)
    stamps = [
        _bsd_now(),
        now.strftime("%b %d %H:%M:%S").encode(),
        now.strftime("%b %e %H:%M:%S.%f").encode(),
        _iso_now(),
        _iso_now(fraction=False),
        now.strftime("%Y-%m-%dT%H:%M:%SZ").encode(),
        now.strftime("%Y-%m-%d %H:%M:%S").encode(),
        now.strftime("%b %e %Y %H:%M:%S").encode(),  # Cisco PIX/ASA
        now.strftime("%b %e %H:%M:%S %Y").encode(),  # Linksys
        now.strftime("%b %e %H:%M:%S:").encode(),  # Cisco's trailing colon
        now.strftime("%b %e %H:%M:%S").encode().upper(),
        now.strftime("%b %e %H:%M:%S").encode().lower(),  # not a timestamp: "dec" is no month to syslog-ng
        b"garbage",
    ]
    hosts = [b"host ", b"h.example.org ", b"::1 ", b"10.0.0.1 ", b"", b"h  "]
    tags = [
        b"jamtart: ",
        b"jamtart[42]: ",
        b"jamtart:",
        b"jamtart ",
        b"jamtart[42 ",
        b"jamtart2: ",
        b"xjamtart: ",
        b"other: ",
    ]
    lines = []
    for stamp in stamps:
        for host in hosts:
            for tag in tags:
                lines.append(b"<14>" + stamp + b" " + host + tag + b"body " + stamp)
    lines += [
        b"jamtart: no priority",
        b"<14>jamtart: no timestamp",
        b"<14>123: " + _bsd_now() + b" host jamtart: cisco sequence number",
        b"<14>*" + _bsd_now() + b" host jamtart: unsynced clock marker",
        b"<14>" + _bsd_now() + b" Message forwarded from aix: jamtart: forwarded",
        b"<14>" + _bsd_now() + b" host last message repeated 3 times",
        b"<1a>jamtart: bad priority",
        b"<>jamtart: empty priority",
        b"<14>" + _bsd_now() + b" " + b"h" * 300 + b" jamtart: long hostname",
        b"<14>" + _bsd_now() + b" jamtart:  two spaces kept one",
        b"<14>" + _bsd_now() + b" host jamtart: trailing spaces   ",
        b"<14>" + _bsd_now() + b" host jamtart: tab\there",
        b"<14>" + _bsd_now() + b" host jamtart: cr\rinside",
    ]
    return b"\n".join(lines) + b"\n"


def rfc5424_corpus() -> bytes:
    stamp = _iso_now()
    lines = [
        b"<14>1 " + stamp + b" host jamtart - - - plain",
        b"<14>1 " + stamp + b" host jamtart 42 ID7 - with procid and msgid",
        b"<14>1 " + stamp + b' host jamtart - - [a@1 x="y"] one element',
        b"<14>1 " + stamp + b' host jamtart - - [a@1 x="y" z="w\\"q\\]"][b@2] two elements, escapes',
        b"<14>1 " + stamp + b" host jamtart - - [a@1 x=y] unquoted value: unparseable",
        b"<14>1 " + stamp + b' host jamtart - - [a@1 x="]"] bracket in value: unparseable',
        b"<14>1 " + stamp + b" host jamtart - - -",
        b"<14>1 " + stamp + b" host jamtart - - - ",
        b"<14>1 " + stamp + b" host jamtart - - - \xef\xbb\xbfwith BOM",
        b"<14>1 " + stamp + b" host jamtart - - - invalid \xff\xfe UTF-8",
        b"<14>1 " + stamp + b" host jamtart - -  sd missing",
        b"<14>1 - host jamtart - - - nil timestamp",
        b"<14>1 " + stamp + b" - jamtart - - - nil hostname",
        b"<14>1 " + stamp + b" host - - - - nil app-name",
        b"<14>1 " + stamp + b" host jamtartbutlonger - - - prefix match",
        b"<14>1 " + stamp + b" host other - - - other program",
        b"<14>1 " + stamp + b" host jamtart",
        b"<14>1 " + stamp + b"x host jamtart - - - bad timestamp",
        b"<14>" + _bsd_now() + b" host jamtart: RFC 3164 on the RFC 5424 source",
    ]
    return b"\n".join(lines) + b"\n"


def envelope(size: int, marker: bytes) -> bytes:
    """A real telemetry line padded to `size` bytes (JSON stays valid: the pad is inside a string)."""
    base = sample_line("128")
    pad = size - len(base) - len(b',"pad":""') - len(marker)
    assert pad >= 0 or size <= 2
    if size <= 2:
        return marker[:size]
    return base[:-1] + b',"pad":"' + marker + b"x" * pad + b'"}'


IDENTICAL_CASES = {
    # The clients of the README and of the field, as they are.
    "go log/syslog": ("readme", [go_log_syslog(sample_line("128"), sample_line("13"), sample_line("255"), b"")]),
    "rust syslog 6 one message, no terminator": ("readme", [rust_syslog(sample_line("142"), terminate=False)]),
    "rust syslog 6 with LF per message": (
        "readme",
        [rust_syslog(sample_line("128"), sample_line("13"), terminate=True)],
    ),
    "python SysLogHandler": (
        "readme",
        [syslog_handler('{"a":1}', "", "multi\nline", "jamtart: nested tag", "ü unicode")],
    ),
    "logger --rfc3164": ("readme", [logger("--rfc3164", "-t", "jamtart", stdin=b"one\ntwo\n\nthree\n")]),
    "logger --rfc5424": ("rfc5424", [logger("--rfc5424", "-t", "jamtart", stdin=b"one\ntwo\nthree\n")]),
    "logger --octet-count": ("framed", [logger("--rfc5424", "--octet-count", "-t", "jamtart", "counted")]),
    "non-jamtart programs": (
        "readme",
        [
            go_log_syslog(b"kept", tag="jamtart"),
            go_log_syslog(b"x", tag="other"),
            go_log_syslog(b"y", tag="xjamtart"),
            go_log_syslog(b"prefix", tag="jamtart2"),
            go_log_syslog(b"z", tag="JAMTART"),
        ],
    ),
    # Sizes: 1 byte, 64 KB, 12 MB (a work package), on both framings.
    "1 byte, 64 KB, 12 MB (newline framing)": (
        "readme",
        [go_log_syslog(b"x"), go_log_syslog(envelope(64 * 1024, b"64k")), go_log_syslog(envelope(12 * MB, b"12m"))],
    ),
    "1 byte, 64 KB, 12 MB (octet counting)": (
        "framed",
        [
            raw(
                make=lambda: b"".join(
                    octet_frame(b"<14>1 " + _iso_now() + b" host jamtart - - - " + envelope(n, b"f"))
                    for n in (1, 64 * 1024, 12 * MB)
                )
            )
        ],
    ),
    # Message bodies syslog-ng treats specially.
    "LF inside a message, newline framing": ("readme", [go_log_syslog(b"first\nsecond\njamtart: third")]),
    "LF inside a message, octet counting": (
        "framed",
        [
            raw(
                make=lambda: (
                    octet_frame(b"<14>" + _bsd_now() + b" host jamtart: first\nsecond")
                    + octet_frame(b"<14>jamtart: ends in LF\n\n")
                )
            )
        ],
    ),
    "invalid UTF-8": ("readme", [go_log_syslog(b"\xff\xfe\xc3(invalid", b"\xed\xa0\x80surrogate")]),
    "empty message": (
        "readme",
        [raw(make=lambda: b"<14>" + _bsd_now() + b" host jamtart: \n<14>jamtart:\n\n\x00<14>jamtart\n")],
    ),
    "empty frames": (
        "framed",
        [raw(make=lambda: octet_frame(b"<14>1 " + _iso_now() + b" host jamtart - - -") + octet_frame(b"") + b" ")],
    ),
    "NUL ends a line": ("readme", [raw(b"<14>jamtart: a\x00<14>jamtart: b\x00\n<14>jamtart: c\x00d\n")]),
    "NUL inside a frame": (
        "framed",
        [raw(octet_frame(b"<14>jamtart: a\x00b") + octet_frame(b"<14>jamtart: c\x00\x00"))],
    ),
    "CR and CRLF": ("readme", [raw(b"<14>jamtart: crlf\r\n<14>jamtart: cr\rmid\n<14>jamtart: many\r\r\r\n")]),
    "CRLF in a frame": ("framed", [raw(octet_frame(b"<14>jamtart: crlf kept CR\r\n"))]),
    "unterminated last line at close": ("readme", [raw(b"<14>jamtart: terminated\n<14>jamtart: unterminated")]),
    "frame cut short at close": (
        "framed",
        [raw(octet_frame(b"<14>jamtart: whole") + octet_frame(b"<14>jamtart: cut")[:-2])],
    ),
    "frame over log_msg_size": (
        "framed",
        [raw(octet_frame(b"<14>jamtart: before") + b"25000001 <14>jamtart: " + b"x" * 1000)],
    ),
    "line of exactly log_msg_size": (
        "readme",
        [raw(b"<14>jamtart: " + b"x" * (25_000_000 - 13) + b"\n<14>jamtart: after\n")],
    ),
    "RFC 3164 header corpus": ("readme", [raw(make=header_corpus)]),
    "RFC 5424 corpus": ("rfc5424", [raw(make=rfc5424_corpus)]),
    "RFC 5424 corpus, octet counted": (
        "framed",
        [raw(make=lambda: b"".join(octet_frame(m) for m in rfc5424_corpus().split(b"\n")[:-1]))],
    ),
}


@pytest.mark.parametrize("case", list(IDENTICAL_CASES))
def test_byte_identical(peers, case):
    source, connections = IDENTICAL_CASES[case]
    sng_files, rx_files = run_case(peers, source, connections, seconds=8 if "MB" in case or "size" in case else 3)
    assert sng_files.keys() == rx_files.keys(), (sng_files.keys(), rx_files.keys())
    for key in sng_files:
        if sng_files[key] != rx_files[key]:
            s, r = sng_files[key].split(b"\n"), rx_files[key].split(b"\n")
            first = next((i for i, (a, b) in enumerate(zip(s, r, strict=False)) if a != b), min(len(s), len(r)))
            pytest.fail(
                f"{key}: line {first + 1} differs\nsyslog-ng: {s[first : first + 3]!r}\nreceiver:  {r[first : first + 3]!r}"[
                    :3000
                ]
            )
    assert any(sng_files.values()), f"{case}: syslog-ng stored nothing, so the case proves nothing"


def test_differences_from_jam_etls_syslog_ng(peers):
    """Where the receiver deliberately does not do what jam-etl's syslog-ng does, and what syslog-ng does."""
    # 1. The README's tcp() source files RFC 5424 under the program "1": every such message is lost.
    rfc5424 = raw(make=lambda: b"<14>1 " + _iso_now() + b" host jamtart - - - an RFC 5424 message\n")
    sng_files, rx_files = run_case(peers, "readme", [rfc5424])
    assert sng_files == {} and list(rx_files.values()) == [b"an RFC 5424 message\n"]

    # 2. It cannot read octet counting either: a frame's count becomes the program name.
    sng_files, rx_files = run_case(peers, "readme", [raw(octet_frame(b"<14>jamtart: counted"))])
    assert sng_files == {} and list(rx_files.values()) == [b"counted\n"]

    # 3. A line over log_msg_size: syslog-ng writes its first 25,000,000 bytes as a (truncated)
    # message and reads the rest as another; the receiver refuses it whole and keeps the next line.
    head = b"<14>jamtart: "
    oversize = head + b"x" * (25_000_001 - len(head) - 1) + b"E"
    sng_files, rx_files = run_case(peers, "readme", [raw(oversize + b"\n<14>jamtart: next\n")], seconds=8)
    (sng_data,) = sng_files.values()
    assert sng_data == b"x" * (25_000_000 - len(head)) + b"\nnext\n"
    assert list(rx_files.values()) == [b"next\n"]

    # 4. An octet count that is a lie (too short): syslog-ng writes the cut message, then closes the
    # connection at the "header" that follows; the receiver refuses the frame and closes too.
    lie = b"20 <14>jamtart: this is longer than twenty bytes" + octet_frame(b"<14>jamtart: lost")
    sng_files, rx_files = run_case(peers, "framed", [raw(lie)])
    assert list(sng_files.values()) == [b"this is\n"] and rx_files == {}

    # 5. File names: syslog-ng uses the message's own timestamp (here one from 1 January), the receiver
    # its clock at receipt.
    _within_one_minute(3)
    receipt_minute = datetime.now(UTC).strftime("%Y/%m/%d/%H%M")
    sng_files, rx_files = run_case(peers, "readme", [raw(b"<14>Jan  1 00:00:00 host jamtart: stamped 1 January\n")])
    (sng_key,) = sng_files
    assert sng_key.endswith("/01/01/0000") and list(rx_files) == [receipt_minute]
    assert sng_files[sng_key] == rx_files[receipt_minute] == b"stamped 1 January\n"

    # 6. ... and a timestamp with a UTC offset is filed under the sender's local time, not UTC.
    _within_one_minute(3)
    receipt_minute = datetime.now(UTC).strftime("%Y/%m/%d/%H%M")
    sng_files, rx_files = run_case(
        peers, "readme", [raw(make=lambda: b"<14>" + _iso_now(2) + b" host jamtart: stamped at +02:00\n")]
    )
    local_minute = datetime.now(timezone(timedelta(hours=2))).strftime("%Y/%m/%d/%H%M")
    assert list(sng_files) == [local_minute] and list(rx_files) == [receipt_minute]

    # 7. jam-etl's source sets no max-connections(), so syslog-ng's default of 10 applies: the 11th
    # node to connect is turned away (the receiver's limit is JAM_RECEIVER_MAX_CONNECTIONS, 1000).
    sng, rx = peers
    before_s, before_r = _sizes(sng.roots["readme"]), _sizes(rx.log_dir)
    held = {
        port: [socket.create_connection((LOOPBACK, port)) for _ in range(10)]
        for port in (sng.ports["readme"], rx.ports["syslog"])
    }
    time.sleep(0.3)
    for port in held:
        send_syslog(port, b"<14>jamtart: the eleventh node\n")
    _settle(sng.roots["readme"], rx.log_dir, before_s, before_r)
    assert _appended(sng.roots["readme"], before_s) == {}
    assert list(_appended(rx.log_dir, before_r).values()) == [b"the eleventh node\n"]
    for sockets in held.values():
        for s in sockets:
            s.close()
    assert "Number of allowed concurrent connections reached" in sng.log_text()
