"""Pure unit tests of the receiver's syslog framing and header parsing (jam_assets/receiver/framing.py,
lines.py). The expected values are what syslog-ng 3.38 did with the same bytes (the same cases run
against a real syslog-ng in test_receiver_vs_syslog_ng.py)."""

from __future__ import annotations

import random

import pytest

from jam_assets.receiver.framing import (
    BadFrame,
    frame_header,
    looks_octet_counted,
    parse,
    strip_frame_end,
    strip_line_end,
)
from jam_assets.receiver.lines import HEAD, FrameReader, LineReader, SpooledMessage

BSD = b"Dec  2 18:09:05"


def body(message: bytes) -> tuple[bytes | None, bytes]:
    program, start = parse(message)
    return program, message[start:]


@pytest.mark.parametrize(
    "message, program, text",
    [
        # RFC 3164, the shapes the clients send
        (b"<14>" + BSD + b" h jamtart: a", b"jamtart", b"a"),
        (b"<14>" + BSD + b" h jamtart[42]: a", b"jamtart", b"a"),
        (b"<14>2026-12-02T18:09:05Z vm jamtart[7]: go", b"jamtart", b"go"),
        (b"<14>Dec 02 18:09:05 jamtart[0]: rust, no hostname", b"jamtart", b"rust, no hostname"),
        (b"<14>jamtart: python, no timestamp", b"jamtart", b"python, no timestamp"),
        (b"jamtart: no priority", b"jamtart", b"no priority"),
        # what follows the program
        (b"<14>" + BSD + b" h jamtart msg no colon", b"jamtart", b"msg no colon"),
        (b"<14>" + BSD + b" h jamtart:nospace", b"jamtart", b"nospace"),
        (b"<14>" + BSD + b" h jamtart:", b"jamtart", b""),
        (b"<14>" + BSD + b" h jamtart[1]:", b"jamtart", b""),
        (b"<14>" + BSD + b" h jamtart[1]:  two spaces", b"jamtart", b" two spaces"),
        (b"<14>" + BSD + b" h jamtart[12 pid not closed", b"jamtart", b"pid not closed"),
        # hostname or program?
        (b"<14>" + BSD + b" jamtart: nohost", b"jamtart", b"nohost"),
        (b"<14>" + BSD + b" jamtart nohost nocolon", b"nohost", b"nocolon"),
        (b"<14>" + BSD + b" ::1 jamtart: ipv6 host", b"jamtart", b"ipv6 host"),
        (b"<14>" + BSD + b" h:1 jamtart: colon ends a non-IPv6 word", b"h", b"1 jamtart: colon ends a non-IPv6 word"),
        (b"<14>" + BSD + b" " + b"h" * 300 + b" jamtart: long", b"h" * 300, b"jamtart: long"),
        # timestamps syslog-ng recognises, and ones it does not
        (b"<14>Dec  2 2026 18:09:05 h jamtart: pix", b"jamtart", b"pix"),
        (b"<14>Dec  2 18:09:05 2026 h jamtart: linksys", b"jamtart", b"linksys"),
        (b"<14>Dec  2 18:09:05.123456 h jamtart: fraction", b"jamtart", b"fraction"),
        (b"<14>Dec  2 18:09:05: h jamtart: cisco colon", b"jamtart", b"cisco colon"),
        (b"<14>DEC  2 18:09:05 h jamtart: any case after a capital", b"jamtart", b"any case after a capital"),
        (
            b"<14>dec  2 18:09:05 h jamtart: lower case: no timestamp",
            b"dec",
            b" 2 18:09:05 h jamtart: lower case: no timestamp",
        ),
        (b"<14>2026-12-02 18:09:05.5+02:00 h jamtart: iso with space", b"jamtart", b"iso with space"),
        (
            b"<14>Dec 2 18:09:05 h jamtart: one-digit day, one space",
            b"Dec",
            b"2 18:09:05 h jamtart: one-digit day, one space",
        ),
        # Cisco and AIX oddities
        (b"<14>123: " + BSD + b" h jamtart: sequence", b"jamtart", b"sequence"),
        (b"<14>*" + BSD + b" h jamtart: unsynced", b"jamtart", b"unsynced"),
        (b"<14>" + BSD + b" Message forwarded from aix: jamtart: fwd", b"jamtart", b"fwd"),
        (b"<14>" + BSD + b" last message repeated 2 times", b"", b"last message repeated 2 times"),
        (b"<14>" + BSD + b" h last message repeated 2 times", b"last", b"message repeated 2 times"),
        # priorities
        (b"<>jamtart: empty", b"jamtart", b"empty"),
        (b"<1a>jamtart: bad", None, None),
        # lines without a header: the first word is the program
        (b"second line", b"second", b"line"),
        (b"", b"", b""),
        # RFC 5424
        (b"<14>1 2026-12-02T18:09:05Z h jamtart - - - p5424", b"jamtart", b"p5424"),
        (
            b'<14>1 2026-12-02T18:09:05.044800+00:00 vm jamtart - - [timeQuality tzKnown="1"] logger',
            b"jamtart",
            b"logger",
        ),
        (b'<14>1 2026-12-02T18:09:05Z h jamtart - ID1 [a@1 x="y"][b@2] sd', b"jamtart", b"sd"),
        (b'<14>1 2026-12-02T18:09:05Z h jamtart - - [a@1 x="\\"\\]\\\\"] escapes', b"jamtart", b"escapes"),
        (b"<14>1 2026-12-02T18:09:05Z h jamtart - - -", b"jamtart", b""),
        (b"<14>1 2026-12-02T18:09:05Z h jamtart - - - ", b"jamtart", b""),
        (b"<14>1 2026-12-02T18:09:05Z h jamtart - - - \xef\xbb\xbfbom", b"jamtart", b"bom"),
        (b"<14>1 2026-12-02T18:09:05Z h jamtart - - - bad\xff", b"jamtart", b"bad\xff"),
        (b"<14>1 - - jamtart - - - nil", b"jamtart", b"nil"),
        (b"<14>1 2026-12-02T18:09:05Z h jamtart - -  twospace", b"jamtart", b"twospace"),
        (b"<14>1 2026-12-02T18:09:05Z h - - - - nil app", b"", b"nil app"),
        (b"<14>1 2026-12-02T18:09:05Z h " + b"j" * 60 + b" - - - long app", b"j" * 48, b"long app"),
        # RFC 5424 that syslog-ng cannot parse (it files them as program "syslog-ng")
        (b"<14>1 2026-12-02T18:09:05Z h jamtart", None, None),
        (b"<14>1 2026-12-02T18:09:05x h jamtart - - - bad stamp", None, None),
        (b"<14>1 2026-12-02T18:09:05Z h jamtart - - [a@1 x=y] unquoted", None, None),
        (b'<14>1 2026-12-02T18:09:05Z h jamtart - - [a@1 x="]"] bracket', None, None),
        (b"<14>1 2026-12-02T18:09:05Z h jamtart - - nosd", None, None),
        (b"<14>1 2026-12-02T18:09:05Z h[x jamtart - - - bracket host", None, None),
        # a version other than 1 is RFC 3164 (where "2" is the program)
        (b"<14>2 2026-12-02T18:09:05Z h jamtart - - - v2", b"2", b"2026-12-02T18:09:05Z h jamtart - - - v2"),
    ],
)
def test_parse_like_syslog_ng(message, program, text):
    got_program, got_text = body(message)
    assert got_program == program
    if program is not None:
        assert got_text == text


def test_rfc5424_is_what_rfc3164_reads_as_program_1():
    """Why jam-etl's tcp() source lost every RFC 5424 message: its parser reads the version as the program."""
    from jam_assets.receiver.framing import _legacy

    message = b"<14>1 2026-12-02T18:09:05Z h jamtart - - - x"
    assert _legacy(message, len(message))[0] == b"1"
    assert parse(message)[0] == b"jamtart"


@pytest.mark.parametrize(
    "head, octet",
    [
        (b"57 <14>1 ...", True),
        (b"0 ", True),
        (b"<14>jamtart: x", False),
        (b"123: cisco", False),
        (b"2026-12-02T18:09:05Z host", False),
        (b"12345678901 too many digits", False),
        (b"123", None),
        (b"", None),
        (b" x", False),
    ],
)
def test_framing_is_decided_from_the_first_bytes(head, octet):
    assert looks_octet_counted(head) is octet


def test_frame_header():
    assert frame_header(b"5 hello", 0) == (5, 2)
    assert frame_header(b"xx12 ab", 2) == (12, 5)
    assert frame_header(b"0000000012 x", 0) == (12, 11)
    assert frame_header(b" x", 0) == (0, 1)  # syslog-ng reads a lone space as a count of 0
    assert frame_header(b"123", 0) is None
    for bad in (b"12x ", b"\n5 x", b"12345678901 x"):
        with pytest.raises(BadFrame):
            frame_header(bad, 0)


def test_message_ends():
    assert strip_frame_end(b"a\r\n\n\x00") == b"a\r"
    assert strip_line_end(b"a\r\r") == b"a"
    assert strip_line_end(b"a\rb") == b"a\rb"


def _split_randomly(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 40))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def _messages(reader, chunks: list[bytes]) -> list[bytes]:
    out = []
    for chunk in chunks:
        out.extend(reader.feed(chunk))
    if isinstance(reader, LineReader):
        last = reader.finish()
        if last is not None:
            out.append(last)
    return [m if isinstance(m, bytes) else _read_spooled(m) for m in out]


def _read_spooled(m: SpooledMessage) -> bytes:
    import os

    spool = m.body(0)
    data = os.pread(spool.file.fileno(), spool.length, spool.start)
    m.close()
    return data


def test_line_reader_any_chunking_same_messages(tmp_path):
    """LF and NUL end a line, CRs before it go; a long line is spooled; chunk boundaries change nothing."""
    long_line = b"L" * (HEAD + 5000) + b"\r"
    stream = b"a\r\nb\x00c\n\n" + long_line + b"\nd\r\r\ntail"
    expected = [b"a", b"b", b"c", b"", b"L" * (HEAD + 5000), b"d", b"tail"]
    rng = random.Random(7)
    for _ in range(30):
        reader = LineReader(tmp_path, max_bytes=1 << 20, spool_bytes=HEAD, nul_ends_line=True)
        assert _messages(reader, _split_randomly(stream, rng)) == expected
        assert reader.too_large == 0


def test_line_reader_http_keeps_nul(tmp_path):
    reader = LineReader(tmp_path, max_bytes=100, spool_bytes=HEAD, nul_ends_line=False)
    assert reader.feed(b"a\x00b\nc") == [b"a\x00b"]
    assert reader.finish() == b"c"


def test_line_reader_refuses_long_lines_whole(tmp_path):
    rng = random.Random(3)
    stream = b"ok1\n" + b"x" * 150_000 + b"\nok2\n" + b"y" * 101 + b"\nok3\n"
    for _ in range(20):
        reader = LineReader(tmp_path, max_bytes=100_000, spool_bytes=HEAD, nul_ends_line=True)
        assert _messages(reader, _split_randomly(stream, rng)) == [b"ok1", b"ok2", b"y" * 101, b"ok3"]
        assert reader.too_large == 1
        reader = LineReader(tmp_path, max_bytes=100, spool_bytes=HEAD, nul_ends_line=True)
        assert _messages(reader, _split_randomly(stream, rng)) == [b"ok1", b"ok2", b"ok3"]
        assert reader.too_large == 2


def test_line_reader_pending_marks_a_message_in_progress(tmp_path):
    reader = LineReader(tmp_path, max_bytes=100, spool_bytes=HEAD, nul_ends_line=True)
    reader.feed(b"whole\npart", now=5.0)
    assert reader.started == 5.0
    reader.feed(b"ial", now=6.0)
    assert reader.started == 5.0  # the slow-sender clock runs from the message's first byte
    reader.feed(b"\n", now=7.0)
    assert not reader.pending


def _frames(*messages: bytes) -> bytes:
    return b"".join(str(len(m)).encode() + b" " + m for m in messages)


def test_frame_reader_any_chunking_same_messages(tmp_path):
    big = b"B" * (HEAD + 3000) + b"\n\x00"
    stream = _frames(b"<14>jamtart: a", b"with\nnewline\n", b"", b"crlf\r\n", big, b"last")
    expected = [b"<14>jamtart: a", b"with\nnewline", b"", b"crlf\r", b"B" * (HEAD + 3000), b"last"]
    rng = random.Random(11)
    for _ in range(30):
        reader = FrameReader(tmp_path, max_bytes=1 << 20, spool_bytes=HEAD)
        assert _messages(reader, _split_randomly(stream, rng)) == expected
        assert reader.failure is None and not reader.pending


def test_frame_reader_failures_keep_the_frames_before(tmp_path):
    reader = FrameReader(tmp_path, max_bytes=1000, spool_bytes=HEAD)
    assert reader.feed(_frames(b"ok") + b"1001 " + b"x" * 10) == [b"ok"]
    assert isinstance(reader.failure, FrameReader.TooLarge) and reader.too_large == 1
    assert reader.feed(_frames(b"after")) == []

    reader = FrameReader(tmp_path, max_bytes=1000, spool_bytes=HEAD)
    assert reader.feed(_frames(b"ok") + b"5 <14>a\n" + _frames(b"lost")) == [b"ok"]  # the count was a lie
    assert isinstance(reader.failure, BadFrame)

    # A frame followed by something that cannot start a frame is refused too: its count may be the lie.
    reader = FrameReader(tmp_path, max_bytes=1000, spool_bytes=HEAD)
    assert reader.feed(_frames(b"ok", b"ok too") + b"<14>unframed\n") == [b"ok"]
    assert isinstance(reader.failure, BadFrame)


def test_frame_reader_cut_frame_is_pending(tmp_path):
    reader = FrameReader(tmp_path, max_bytes=1000, spool_bytes=HEAD)
    assert reader.feed(_frames(b"whole") + b"10 part", now=1.0) == [b"whole"]
    assert reader.pending and reader.started == 1.0


def test_fast_paths_agree_with_syslog_ngs_steps_on_mutated_headers():
    """The regular-expression fast paths in `parse` give what the step-by-step parser gives, on the
    headers real clients send and on thousands of mutations of them."""
    from jam_assets.receiver.framing import parse_exactly

    templates = [
        b"<14>2026-12-02T18:09:05Z vm jamtart[7]: body",
        b"<14>2026-12-02T18:09:05.123456+02:00 vm jamtart: body",
        b"<14>Dec  2 18:09:05 h jamtart[42]: body",
        b"<14>Dec 02 18:09:05 jamtart[0]: body",
        b"<14>Dec  2 18:09:05 2026 h jamtart: body",
        b"<14>jamtart: body",
        b"<14>jamtart[1]: body",
        b'<14>1 2026-12-02T18:09:05.044800+00:00 vm jamtart - - [timeQuality tzKnown="1" isSynced="0"] body',
        b'<14>1 2026-12-02T18:09:05Z h jamtart 12 ID [a@1 x="y\\"z"][b@2] \xef\xbb\xbfbody',
        b"<14>1 - - jamtart - - - body",
    ]
    alphabet = b' :[]<>-.0123456789aZzDecT"=\\\xef\xbb\xbf\x00\tJanjamtart'
    rng = random.Random(2025)
    checked = 0
    for template in templates:
        assert parse(template) == parse_exactly(template), template
        for _ in range(1500):
            m = bytearray(template)
            for _ in range(rng.randint(1, 3)):
                at = rng.randrange(len(m) + 1)
                action = rng.random()
                if action < 0.4 and at < len(m):
                    m[at] = rng.choice(alphabet)
                elif action < 0.7:
                    m[at:at] = bytes([rng.choice(alphabet)])
                elif at < len(m):
                    del m[at]
            data = bytes(m)
            assert parse(data) == parse_exactly(data), data
            checked += 1
    assert checked == 15000
