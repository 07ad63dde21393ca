"""What both transports share: one attempt's identity, its outlet to the engine, its last frame."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from perdure.engine.actions import StartAttempt
from perdure.runtime.remote.inbound import Inbound
from perdure.runtime.remote.request import Invocation

Sink = Callable[["Attempt", list[Any]], None]


class Attempt:
    """Base of the request/response and bidirectional attempts.

    `emit` hands messages to the invoker, which drops them once the attempt was aborted or
    replaced; `last_frame` (loop time) is when a frame last went either way.
    """

    def __init__(self, action: StartAttempt, target: Invocation, sink: Sink) -> None:
        self.action = action
        self.target = target
        self.inbound = Inbound(target.uri)
        self._sink = sink
        self.last_frame = asyncio.get_running_loop().time()

    @property
    def invocation_id(self) -> str:
        return self.action.invocation_id

    def emit(self, messages: list[Any]) -> None:
        self._sink(self, messages)

    def touch(self) -> None:
        self.last_frame = asyncio.get_running_loop().time()

    def received(self, data: bytes) -> None:
        """Decode a chunk of the response and emit its messages as one batch."""
        messages = self.inbound.feed(data)
        if messages:
            self.touch()
            self.emit(messages)

    async def run(self) -> None:
        """Run until the deployment ends the attempt; raises TransportError when it fails."""
        raise NotImplementedError

    def notify(self, messages: Sequence[Any]) -> None:
        """New notifications journaled for this attempt."""

    def cancel(self) -> None:
        """Drop the exchange at once (abort, stop)."""

    async def close(self, graceful: bool) -> None:
        """Release the connection or stream; `graceful` after the attempt ended normally."""
