"""Syslog over TCP as syslog-ng 3.38 reads it: RFC 6587 framing and the RFC 5424 / RFC 3164 headers.

The receiver must write exactly the bytes that syslog-ng writes with jam-etl's configuration
(`template("${MESSAGE}\\n")`), so these parsers follow syslog-ng's own (syslogformat/syslog-format.c,
timeutils/scan-timestamp.c, logproto-text-server.c, logproto-framed-server.c) rule for rule, leniencies
included: what is the program name, where the message body starts, and which bytes are stripped from
its end. Only those two results matter here (the program decides the `jamtart` filter, the body is
the line), so timestamps and structured data are checked for shape and skipped, never converted.

The parser is syslog-ng's RFC 5424 one with its RFC 3164 fallback (a `syslog()` source, or
`flags(syslog-protocol)`). On every message that jam-etl's plain `tcp()` source would keep, it gives
the same result as that source's RFC 3164 parser: a message the two read differently starts with
`<PRI>1 `, and the RFC 3164 parser takes that `1` for the program name, so jam-etl's syslog-ng
dropped every RFC 5424 message.

Pure functions on bytes; nothing here does I/O.
"""

from __future__ import annotations

import re

# An octet count has at most this many digits (syslog-ng: MAX_FRAME_LEN_DIGITS).
FRAME_DIGITS = 10
# Text framing ends a message at the first LF or NUL (syslog-ng's find_eom).
TEXT_TERMINATORS = b"\n\x00"

_DIGITS = frozenset(b"0123456789")
_XDIGITS = frozenset(b"0123456789abcdefABCDEF")
_C_SPACE = frozenset(b" \t\n\v\f\r")
# Characters that end an SD-ID or a PARAM-NAME, or may not start one (besides non-ASCII).
_SD_NAME_STOP = frozenset(b'= ]"')
_MONTHS = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec")
_MONTH_FIRST = frozenset(m[0] for m in _MONTHS)
_MONTHS_LOWER = frozenset(m.lower() for m in _MONTHS)
_AIX_FORWARD = b"Message forwarded from "
_REPEATED = b"last message repeated"
_BOM = b"\xef\xbb\xbf"
_HOSTNAME_MAX = 255
_PROGRAM_MAX = 48  # RFC 5424 APP-NAME, as syslog-ng truncates it
_SD_ID_MAX = 248  # syslog-ng keeps SD names in a 256-byte buffer behind ".SDATA."


class BadFrame(ValueError):
    """An octet-counted frame whose header is not `DIGITS SP`: the stream cannot be read on."""


def looks_octet_counted(head: bytes) -> bool | None:
    """Decides a connection's framing from its first bytes: True for RFC 6587 octet counting, False for
    newline (non-transparent) framing, None while the bytes seen so far could still be either.

    Octet counting is `DIGITS SP` (RFC 6587 3.4.1); every syslog message proper starts with `<`, so a
    leading digit can only be a count. A digit run that does not end in a space is a PRI-less message
    (`123: ...` Cisco sequence numbers, a bare ISO timestamp), read as text, as syslog-ng's text source would.
    """
    if not head:
        return None
    for i, c in enumerate(head):
        if c in _DIGITS:
            if i >= FRAME_DIGITS:
                return False
            continue
        return i > 0 and c == 0x20
    return None if len(head) <= FRAME_DIGITS else False


def frame_header(buf: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """The octet count at `buf[pos:]` and where its message starts, or None until the header is complete.

    Like syslog-ng: at most 10 digits, then one space; a space alone is a count of 0.
    """
    length = 0
    end = len(buf)
    i = pos
    while i < end:
        c = buf[i]
        if c in _DIGITS and i - pos < FRAME_DIGITS:
            length = length * 10 + c - 48
        elif c == 0x20:
            return length, i + 1
        else:
            shown = bytes(buf[pos : min(i + 1, pos + 16)])
            raise BadFrame(f"invalid octet-counting frame header {shown!r}")
        i += 1
    return None


def strip_frame_end(data: bytes) -> bytes:
    """What syslog-ng's message parser strips from a message's end: every trailing LF and NUL (a CR stays)."""
    return data.rstrip(b"\n\x00")


def strip_line_end(line: bytes) -> bytes:
    """What syslog-ng's text framing strips from a line before its terminator: trailing CRs (so CRLF works)."""
    return line.rstrip(b"\r")


def parse(data: bytes) -> tuple[bytes | None, int]:
    """The program name and the offset of the message body in one syslog message (already stripped).

    The program is None when syslog-ng would reject the message as unparseable (it then files it
    under the program name `syslog-ng`, which no `^jamtart` filter keeps).
    """
    m = _FAST_5424.match(data)
    if m is not None:
        app = m.group("app")
        return (b"" if app == b"-" else app[:_PROGRAM_MAX]), m.end()
    m = _FAST_STAMPED.match(data) or _FAST_UNSTAMPED.match(data)
    if m is not None:
        return m.group("prog"), m.end()
    return parse_exactly(data)


def parse_exactly(data: bytes) -> tuple[bytes | None, int]:
    """`parse` without the fast paths: syslog-ng's parser step by step, for any input."""
    n = len(data)
    i = _pri(data, 0, n)
    if i < 0:
        return _legacy(data, n)
    j = i
    version = 0
    while j < n and data[j] != 0x20:
        c = data[j]
        if c not in _DIGITS:
            return _legacy(data, n)
        version = version * 10 + c - 48
        j += 1
    if version != 1:
        return _legacy(data, n)
    return _rfc5424(data, j, n)


# Fast paths: regular expressions for the headers real clients send, each matching only inputs on
# which parse_exactly's steps are certain to give the same result (anything else falls through to it;
# test_receiver_framing checks the two agree on mutated headers). Why each piece is safe:
# - after `<PRI>`, a timestamp starting with 4 digits and '-' or a month name cannot be an RFC 5424
#   version, and leaves no Cisco sequence number or clock marker to skip;
# - timestamps are all-digit fields (syslog-ng also takes space-padded ones: those fall through), a
#   BSD one not followed by ` YYYY ` (which would make it a Linksys one);
# - at least one space follows, then neither AIX's "Message forwarded from " nor "last message repeated";
# - a word of hostname-safe characters followed by a space is a hostname, as syslog-ng decides
#   (taken atomically: no backtracking into reading it as the program); a program that could be the
#   start of an IPv6 address (1-4 hex digits and a colon) falls through;
# - the program runs to a space, `[` or `:`, then `[pid]`, a colon and one space are skipped.
_ISO_STAMP = (
    rb"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:[.,][0-9]+)?(?:Z|[+-][0-9]{2}:[0-9]{2}(?![0-9]))?"
)
_BSD_STAMP = (
    rb"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (?: [0-9]|[0-9]{2}) [0-9]{2}:[0-9]{2}:[0-9]{2}"
    rb"(?! [0-9]{4}[ \t\n\v\f\r])(?:[.,][0-9]+)?"
)
_PROGRAM_TAIL = rb"(?=[ \[:]|\Z)(?:\[[^ \]:]*\]?)?:? ?"
_FAST_STAMPED = re.compile(
    rb"<[0-9]*>(?:" + _ISO_STAMP + rb"|" + _BSD_STAMP + rb") +(?!Message forwarded from |last message repeated)"
    rb"(?>(?:[A-Za-z0-9._-]{1,255} +)?)(?![0-9A-Fa-f]{1,4}:)(?P<prog>[A-Za-z0-9._/-]+)" + _PROGRAM_TAIL
)
# No timestamp: "<PRI>program[pid]: ". A program starting with a letter and ended by `[` or `:` can
# be neither a timestamp nor a Cisco marker.
_FAST_UNSTAMPED = re.compile(rb"<[0-9]*>(?P<prog>[A-Za-z][A-Za-z0-9._/-]*)(?=[\[:])(?:\[[^ \]:]*\]?)?:? ?")
# RFC 5424 with hostname-safe HOSTNAME, no empty fields and short SD names.
_SD_NAME = rb"[\x00-\x1f\x21\x23-\x3c\x3e-\x5c\x5e-\x7f]{1,32}"
_SD_ELEMENT = rb"\[" + _SD_NAME + rb"(?: " + _SD_NAME + rb'="(?:[^"\\\]]|\\[\s\S])*")*\]'
_FAST_5424 = re.compile(
    rb"<[0-9]*>1 (?:-|[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:[.,][0-9]+)?(?:Z|[+-][0-9]{2}:[0-9]{2})?)"
    rb" [A-Za-z0-9._-]{1,255} (?P<app>[^ ]+) [^ ]+ [^ ]+ (?:-|(?:" + _SD_ELEMENT + rb")+)(?: (?:\xef\xbb\xbf)?|\Z)"
)


def _pri(data: bytes, i: int, n: int) -> int:
    """Skips `<digits>`; a message without one gets a default priority. -1: a `<` not followed by digits."""
    if i < n and data[i] == 0x3C:
        i += 1
        while i < n and data[i] != 0x3E:
            if data[i] not in _DIGITS:
                return -1
            i += 1
        if i < n:
            i += 1
    return i


def _legacy(data: bytes, n: int) -> tuple[bytes | None, int]:
    """RFC 3164 (BSD) syslog, with syslog-ng's guesses for hostname and program."""
    i = _pri(data, 0, n)
    if i < 0:
        return None, 0
    i = _cisco_sequence_id(data, i, n)
    while i < n and data[i] == 0x20:
        i += 1
    if i < n and data[i] in b"*.":  # Cisco's clock-sync marker before the timestamp
        i += 1
    stamp_end = _rfc3164_timestamp(data, i, n)
    if stamp_end < 0:
        # No timestamp: "program[pid]: message".
        return _legacy_program(data, i, n)
    i = stamp_end
    while i < n and data[i] == 0x20:
        i += 1
    have_host = False
    if data.startswith(_AIX_FORWARD, i):
        i += len(_AIX_FORWARD)
        while i < n and data[i] != 0x3A:
            i += 1
        while i < n and data[i] in b" :":
            i += 1
        have_host = True
    if n - i > len(_REPEATED) and data.startswith(_REPEATED, i):
        return b"", i  # "last message repeated N times": no hostname, no program
    if not have_host:
        i = _hostname_end(data, i, n)
        while i < n and data[i] == 0x20:
            i += 1
    return _legacy_program(data, i, n)


def _cisco_sequence_id(data: bytes, i: int, n: int) -> int:
    """Skips a Cisco `123: ` sequence number (digits, a colon, a space); anything else is left alone."""
    j = i
    while j < n and data[j] != 0x3A:
        if data[j] not in _DIGITS:
            return i
        j += 1
    if j >= n:
        return i
    j += 1
    if j >= n or data[j] != 0x20:
        return i
    return j


def _legacy_program(data: bytes, i: int, n: int) -> tuple[bytes, int]:
    """`program[pid]: `: the program runs to a space, `[` or `:`; then a pid, a colon and one space are skipped."""
    start = i
    while i < n and data[i] not in b" [:":
        i += 1
    program = data[start:i]
    if i < n and data[i] == 0x5B:
        while i < n and data[i] not in b" ]:":
            i += 1
        if i < n and data[i] == 0x5D:
            i += 1
    if i < n and data[i] == 0x3A:
        i += 1
    if i < n and data[i] == 0x20:
        i += 1
    return program, i


def _hostname_end(data: bytes, i: int, n: int) -> int:
    """Where a hostname ends, if the next word is one (it must be followed by a space); else `i`.

    A colon ends the word unless everything so far could be an IPv6 address, so `jamtart:` and
    `jamtart[1]:` are programs, while `h` and `::1` followed by a space are hostnames.
    """
    j = i
    segments = digits = 0
    ipv6 = True
    while j < n and j - i < _HOSTNAME_MAX:
        c = data[j]
        if c == 0x20 or c == 0x5B:
            break
        if ipv6:
            if c == 0x3A:
                digits = 0
                segments += 1
                ipv6 = segments < 8
            elif c in _XDIGITS:
                digits += 1
                ipv6 = digits <= 4
            else:
                ipv6 = False
        if c == 0x3A and not ipv6:
            break
        j += 1
    if j < n and data[j] == 0x20:
        return j
    return i


def _int_field(data: bytes, i: int, n: int, width: int) -> int:
    """syslog-ng's scan_positive_int: exactly `width` characters, leading spaces then digits. -1 if not."""
    while i < n and width and data[i] == 0x20:
        i += 1
        width -= 1
    while i < n and width and data[i] in _DIGITS:
        i += 1
        width -= 1
    return i if width == 0 else -1


def _expect(data: bytes, i: int, n: int, chars: bytes) -> int:
    return i + 1 if i >= 0 and i < n and data[i] in chars else -1


def _fields(data: bytes, i: int, n: int, pattern: tuple) -> int:
    """Scans a timestamp pattern: ints are field widths, bytes are one expected character out of them."""
    for part in pattern:
        if i < 0:
            return -1
        i = _int_field(data, i, n, part) if isinstance(part, int) else _expect(data, i, n, part)
    return i


def _month(data: bytes, i: int, n: int) -> int:
    # The first letter must be a capital (syslog-ng switches on it), the rest may be any case.
    if n - i < 3 or data[i] not in _MONTH_FIRST or data[i : i + 3].lower() not in _MONTHS_LOWER:
        return -1
    return i + 3


def _fraction(data: bytes, i: int, n: int) -> int:
    if i < n and data[i] in b".,":
        i += 1
        while i < n and data[i] in _DIGITS:
            i += 1
    return i


_ISO = (4, b"-", 2, b"-", 2, b"T ", 2, b":", 2, b":", 2)
_BSD = (b" ", 2, b" ", 2, b":", 2, b":", 2)
_PIX = (b" ", 2, b" ", 4, b" ", 2, b":", 2, b":", 2)
_LINKSYS = (b" ", 2, b" ", 2, b":", 2, b":", 2, b" ", 4)


def _iso_stamp(data: bytes, i: int, n: int) -> int:
    """RFC 3339: date, `T` or space, time, optional fraction, then `Z`, `+hh:mm`/`-hh:mm` or nothing."""
    i = _fields(data, i, n, _ISO)
    if i < 0:
        return -1
    i = _fraction(data, i, n)
    if i < n and data[i] == 0x5A:
        return i + 1
    if (
        n - i >= 6
        and data[i] in b"+-"
        and data[i + 1] in _DIGITS
        and data[i + 2] in _DIGITS
        and data[i + 3] == 0x3A
        and data[i + 4] in _DIGITS
        and data[i + 5] in _DIGITS
        and (n - i < 7 or data[i + 6] not in _DIGITS)
    ):
        return i + 6
    return i


def _at(data: bytes, i: int, offsets: dict[int, bytes]) -> bool:
    return all(data[i + k] in chars for k, chars in offsets.items())


def _rfc3164_timestamp(data: bytes, i: int, n: int) -> int:
    """The end of a BSD-style timestamp at `i` (ISO, Cisco PIX/ASA, Linksys or `Mmm dd hh:mm:ss`), or -1."""
    left = n - i
    if left >= 19 and _at(data, i, {4: b"-", 7: b"-", 10: b"T ", 13: b":", 16: b":"}):
        end = _iso_stamp(data, i, n)
    elif (
        left >= 21
        and _at(data, i, {3: b" ", 6: b" ", 11: b" ", 14: b":", 17: b":", 20: b": "})
        and all(data[i + k] in _DIGITS for k in (7, 8, 9, 10))
    ):
        end = _fields(data, _month(data, i, n), n, _PIX)
        if 0 <= end < n and data[end] == 0x3A:
            end += 1
    elif (
        left >= 21
        and _at(data, i, {3: b" ", 6: b" ", 9: b":", 12: b":", 15: b" "})
        and all(data[i + k] in _DIGITS for k in (16, 17, 18, 19))
        and data[i + 20] in _C_SPACE
    ):
        end = _fields(data, _month(data, i, n), n, _LINKSYS)
    elif left >= 15 and _at(data, i, {3: b" ", 6: b" ", 9: b":", 12: b":"}):
        end = _fields(data, _month(data, i, n), n, _BSD)
        if end >= 0:
            end = _fraction(data, end, n)
    else:
        return -1
    if 0 <= end < n and data[end] == 0x3A:  # Cisco's colon after the timestamp
        end += 1
    return end


def _column(data: bytes, i: int, n: int, max_len: int) -> tuple[bytes, int]:
    """An RFC 5424 header field up to the next space (`-` is nil). No space left: nothing, at the end."""
    space = data.find(b" ", i, n)
    if space < 0:
        return b"", n
    if space - i == 1 and data[i] == 0x2D:
        return b"", space
    return data[i : min(space, i + max_len)], space


def _sd_name_end(data: bytes, i: int, n: int, stop: int, room: int) -> int:
    """Scans an SD-ID or PARAM-NAME up to `stop` (or a space/`]` for SD-IDs); -1 on a bad character."""
    start = i
    while i < n:
        c = data[i]
        if c == stop or (stop == 0x20 and c == 0x5D):
            break
        if i - start >= room or c > 0x7F or c in _SD_NAME_STOP:
            return -1
        i += 1
    return i


def _structured_data(data: bytes, i: int, n: int) -> int:
    """The end of RFC 5424 STRUCTURED-DATA at `i`, or -1 where syslog-ng gives up on the message."""
    if i < n and data[i] == 0x2D:
        return i + 1
    if not (i < n and data[i] == 0x5B):
        return i  # neither nil nor an element: syslog-ng leaves it for the space check to reject
    i += 1
    open_elements = 1
    while True:
        if i >= n or data[i] > 0x7F or data[i] in _SD_NAME_STOP:
            return -1
        start = i
        i = _sd_name_end(data, i, n, 0x20, _SD_ID_MAX)
        if i < 0:
            return -1
        id_len = i - start
        while i < n and data[i] != 0x5D:
            if data[i] != 0x20:
                return -1
            i += 1
            if i >= n or data[i] > 0x7F or data[i] in _SD_NAME_STOP:
                return -1
            i = _sd_name_end(data, i, n, 0x3D, 255 - id_len)
            if i < 0 or i >= n:
                return -1
            i += 1  # '='
            if i >= n or data[i] != 0x22:
                return -1
            i += 1
            escaped = False
            while i < n and (data[i] != 0x22 or escaped):
                c = data[i]
                if not escaped and c == 0x5C:
                    escaped = True
                else:
                    if not escaped and c == 0x5D:
                        return -1
                    escaped = False
                i += 1
            if i >= n:
                return -1
            i += 1  # closing quote
        if i >= n:
            return -1
        i += 1  # ']'
        open_elements -= 1
        if i < n and data[i] == 0x5B:
            i += 1
            open_elements += 1
        if i >= n or open_elements == 0:
            return i


def _rfc5424(data: bytes, i: int, n: int) -> tuple[bytes | None, int]:
    """`<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA [SP [BOM]MSG]`, from after the version."""
    if not (i < n and data[i] == 0x20):
        return None, 0
    i += 1
    if i < n and data[i] == 0x2D:
        i += 1
    else:
        i = _iso_stamp(data, i, n)
        if i < 0:
            return None, 0
    if not (i < n and data[i] == 0x20):
        return None, 0
    i = _hostname_end(data, i + 1, n)
    if not (i < n and data[i] == 0x20):
        return None, 0
    program, i = _column(data, i + 1, n, _PROGRAM_MAX)
    for _field_max in (128, 32):  # PROCID, MSGID
        if not (i < n and data[i] == 0x20):
            return None, 0
        _, i = _column(data, i + 1, n, _field_max)
    if not (i < n and data[i] == 0x20):
        return None, 0
    i = _structured_data(data, i + 1, n)
    if i < 0:
        return None, 0
    if i < n:
        if data[i] != 0x20:
            return None, 0
        i += 1
        if data.startswith(_BOM, i):
            i += 3
    return program, i
