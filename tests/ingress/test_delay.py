"""`?delay=` parsing, without a server."""

from __future__ import annotations

from datetime import timedelta

import pytest

from perdure.ingress.delay import parse_delay


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT10S", timedelta(seconds=10)),
        ("pt1m30s", timedelta(seconds=90)),
        ("P1D", timedelta(days=1)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("P2W", timedelta(weeks=2)),
        ("PT0.5S", timedelta(milliseconds=500)),
        ("10s", timedelta(seconds=10)),
        ("1m", timedelta(minutes=1)),
        ("500ms", timedelta(milliseconds=500)),
        ("60 sec", timedelta(seconds=60)),
        ("1h", timedelta(hours=1)),
        ("1m30s", timedelta(seconds=90)),
        ("1h 2m 3s", timedelta(hours=1, minutes=2, seconds=3)),
        ("2 hours, 5 minutes", timedelta(hours=2, minutes=5)),
        ("1.5s", timedelta(milliseconds=1500)),
        ("3 days", timedelta(days=3)),
        ("60000", timedelta(seconds=60)),
        ("0", timedelta(0)),
        (" 250 ", timedelta(milliseconds=250)),
    ],
)
def test_accepted_formats(text: str, expected: timedelta) -> None:
    assert parse_delay(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", " ", "soon", "-5s", "-1", "PT", "P", "P1Y", "P1M", "P1DT", "10 parsecs", "1.5.5s", "s", "1e3",
     "9" * 100, "PT99999999999999H", "1m 30", "NaN", "inf"],
)  # fmt: skip
def test_refused_formats(text: str) -> None:
    with pytest.raises(ValueError):
        parse_delay(text)
