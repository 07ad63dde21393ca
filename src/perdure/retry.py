"""Retry policies: how long to wait before the next attempt, and when to stop.

A leaf module shared by the SDK (handler options, `ctx.run` steps) and the engine (attempt
retries), so the policy is written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal


def _ms(value: timedelta | float | int) -> int:
    if isinstance(value, timedelta):
        return int(value.total_seconds() * 1000)
    return int(value * 1000)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: `initial_interval * factor**n`, capped at `max_interval`.

    The defaults are Restate's: 500 ms, ×2, at most 1 minute apart, 70 attempts, then pause.
    `max_attempts=None` retries forever; `max_duration` stops retrying once that long has passed
    without progress (since the journal last grew — for a `ctx.run` step, since it started failing).
    What happens when attempts run out is `on_max_attempts`: "pause" keeps the invocation for an
    operator to resume, "kill" fails it with a terminal error.

        RetryPolicy(initial_interval=timedelta(milliseconds=100), max_attempts=5)
    """

    initial_interval: timedelta = timedelta(milliseconds=500)
    factor: float = 2.0
    max_interval: timedelta = timedelta(minutes=1)
    max_attempts: int | None = 70
    max_duration: timedelta | None = None
    on_max_attempts: Literal["pause", "kill"] = "pause"

    def __post_init__(self) -> None:
        if self.factor < 1:
            raise ValueError("RetryPolicy.factor must be >= 1")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be >= 1 (or None for unlimited)")
        if self.initial_interval < timedelta(0):
            raise ValueError("RetryPolicy.initial_interval must not be negative")

    def delay_ms(self, failures: int) -> int:
        """Wait before the next attempt, after `failures` failed attempts (>= 1)."""
        try:
            delay = _ms(self.initial_interval) * self.factor ** max(failures - 1, 0)
        except OverflowError:  # factor**n left the floats long after max_interval (unlimited retries)
            return _ms(self.max_interval)
        return int(min(delay, _ms(self.max_interval)))

    def exhausted(self, attempts: int, elapsed_ms: int = 0) -> bool:
        """True when no further attempt is allowed after `attempts` attempts."""
        if self.max_attempts is not None and attempts >= self.max_attempts:
            return True
        return self.max_duration is not None and elapsed_ms >= _ms(self.max_duration)


DEFAULT = RetryPolicy()
