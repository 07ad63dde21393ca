"""Shared helpers for Kafka tests: bounded waits and quick-joining subscription options."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# tansu holds a group join for half the session timeout (1 s at least): keep it short in tests.
FAST = {"auto.offset.reset": "earliest", "session.timeout.ms": "2000", "heartbeat.interval.ms": "200"}


async def wait_until(condition: Callable[[], object], within: float = 15.0, what: str = "") -> None:
    """Poll `condition` every 20 ms; fail the test after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what or condition}")
        await asyncio.sleep(0.02)
