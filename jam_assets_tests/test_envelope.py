import pytest

from jam_assets.core.envelope import LineRejected, TimeParser, parse_metadata, slot_of


@pytest.mark.parametrize(
    "text, iso, seconds",
    [
        ("2025-04-23T06:00:06.285625995Z", "2025-04-23T06:00:06.285625Z", 1745388006),
        ("2025-04-23T06:00:00.12237512Z", "2025-04-23T06:00:00.122375Z", 1745388000),
        ("2025-04-23T06:00:06.5Z", "2025-04-23T06:00:06.500000Z", 1745388006),
        ("2025-04-23T06:00:06Z", "2025-04-23T06:00:06.000000Z", 1745388006),
        ("2025-04-23t06:00:06.1z", "2025-04-23T06:00:06.100000Z", 1745388006),
        ("2025-04-23T06:00:06.1+01:00", "2025-04-23T05:00:06.100000Z", 1745384406),
    ],
)
def test_times(text, iso, seconds):
    parser = TimeParser()
    for _ in range(2):  # the second time through the per-second cache
        assert parser.parse(text) == (iso, seconds)


def test_the_cache_does_not_let_bad_fractions_through():
    parser = TimeParser()
    parser.parse("2025-04-23T06:00:06.1Z")
    for bad in (
        "2025-04-23T06:00:06.12a4Z",
        "2025-04-23T06:00:06.Z",
        "2025-04-23T06:00:06.1234567890Z",
        "2025-04-23T06:00:06.١Z",
    ):
        with pytest.raises(LineRejected, match="time is not RFC 3339"):
            parser.parse(bad)


def test_slot_and_metadata():
    assert slot_of(1745388006) == 1609201
    assert parse_metadata("team=JAMDUNA|codec_len=304|junk|id=0xab=cd") == {
        "team": "JAMDUNA",
        "codec_len": "304",
        "id": "0xab=cd",
    }
