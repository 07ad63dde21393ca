"""The `?delay=` of a send: ISO-8601 durations, friendly durations, or bare milliseconds.

    parse_delay("PT1M30S") == parse_delay("1m30s") == parse_delay("90 sec") == parse_delay("90000")

Restate accepts ISO-8601 (`PT10S`, `P1D`) and friendly forms (`10s`, `500ms`, `60 sec`); its own
Python client sends a bare integer, which Restate rejects and perdure reads as milliseconds.
Years and months are refused: their length depends on the calendar.
"""

from __future__ import annotations

import re
from datetime import timedelta

#: The longest delay accepted (about 100 years): keeps timestamps inside 64-bit milliseconds.
MAX_DELAY_MS = 100 * 365 * 24 * 3600 * 1000

_MS_PER_UNIT = {
    "ms": 1,
    "s": 1000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 7 * 86_400_000,
}

_FRIENDLY_UNITS = {
    **{u: "ms" for u in ("ms", "msec", "msecs", "milli", "millis", "millisecond", "milliseconds")},
    **{u: "s" for u in ("s", "sec", "secs", "second", "seconds")},
    **{u: "m" for u in ("m", "min", "mins", "minute", "minutes")},
    **{u: "h" for u in ("h", "hr", "hrs", "hour", "hours")},
    **{u: "d" for u in ("d", "day", "days")},
    **{u: "w" for u in ("w", "wk", "wks", "week", "weeks")},
}

_NUMBER = r"\d+(?:\.\d+)?"
_ISO = re.compile(
    rf"P(?:(?P<w>{_NUMBER})W)?(?:(?P<d>{_NUMBER})D)?"
    rf"(?:T(?:(?P<h>{_NUMBER})H)?(?:(?P<m>{_NUMBER})M)?(?:(?P<s>{_NUMBER})S)?)?",
    re.IGNORECASE,
)
_FRIENDLY_PART = re.compile(rf"\s*({_NUMBER})\s*([a-zA-Z]+)\s*,?")


def parse_delay(text: str) -> timedelta:
    """The delay `text` stands for; raises ValueError (with a message for the client) if malformed."""
    value = text.strip()
    if not value:
        raise ValueError("the delay is empty")
    if len(value) > 64:
        raise ValueError("the delay is too long to be a duration")
    if value.isdigit():
        ms = int(value)
    elif value[0] in "pP":
        ms = _iso_ms(value)
    else:
        ms = _friendly_ms(value)
    if ms > MAX_DELAY_MS:
        raise ValueError(f"the delay {text!r} is too long (at most about 100 years)")
    return timedelta(milliseconds=ms)


def _iso_ms(value: str) -> int:
    match = _ISO.fullmatch(value)
    if match is None or value.upper().endswith("T") or not any(match.groupdict().values()):
        raise ValueError(f"{value!r} is not an ISO-8601 duration such as PT10S, PT1M30S or P1D")
    total = 0.0
    for unit, number in match.groupdict().items():
        if number is not None:
            total += float(number) * _MS_PER_UNIT[unit]
    return _checked(total, value)


def _friendly_ms(value: str) -> int:
    total = 0.0
    position = 0
    while position < len(value):
        match = _FRIENDLY_PART.match(value, position)
        if match is None:
            break
        unit = _FRIENDLY_UNITS.get(match.group(2).lower())
        if unit is None:
            raise ValueError(f"unknown unit {match.group(2)!r} in delay {value!r}")
        total += float(match.group(1)) * _MS_PER_UNIT[unit]
        position = match.end()
    if position == 0 or position < len(value):
        raise ValueError(
            f"{value!r} is not a duration: use e.g. 10s, 1m30s, 500ms, PT10S, or a number of milliseconds"
        )
    return _checked(total, value)


def _checked(total_ms: float, value: str) -> int:
    if total_ms > MAX_DELAY_MS:
        raise ValueError(f"the delay {value!r} is too long (at most about 100 years)")
    return round(total_ms)
