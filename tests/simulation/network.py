"""The simulated transport between the engine and its attempts, and from clients to the engine.

Messages travel on channels, each FIFO like the stream it stands for (an attempt's output
stream, an attempt's notification stream, one client connection); the simulator picks which
channel delivers next, so channels interleave in any order and a notification can arrive long
after it was sent — after its attempt has suspended, crashed or been replaced.

Faults, drawn by the world: a message is *lost* (the stream it was on breaks: the attempt's
connection is gone, as the remote invoker reports it) or *duplicated* (delivered twice): client
commands, notifications to attempts, timers and Kafka batches. Reordering inside one stream is
not injected: every transport perdure has (in-process calls, HTTP/2 streams, request/response
bodies) keeps a stream's order, and the protocol relies on it (the VM's arrival order is the
journal's order).

Nor, by default, is a duplicated *attempt output*: the protocol identifies an attempt's commands
by their position in its stream (Restate's does the same), no transport repeats a stream's
message, and a repeated command is journaled twice (`--duplicate-outputs` shows it: the journal
then holds two results for one completion). Guarding against it would take a command index on
the wire, which Restate's protocol does not have.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

Channel = tuple[str, ...]  # ("out", invocation_id, attempt) | ("notify", …) | ("client", n)


class Network:
    def __init__(self) -> None:
        self._channels: dict[Channel, deque[Any]] = {}

    def send(self, channel: Channel, message: Any) -> None:
        self._channels.setdefault(channel, deque()).append(message)

    def busy(self) -> list[Channel]:
        """Channels with something in flight, in a stable order (the seed picks among them)."""
        return sorted(c for c, q in self._channels.items() if q)

    def pop(self, channel: Channel) -> Any:
        queue = self._channels[channel]
        message = queue.popleft()
        if not queue:
            del self._channels[channel]
        return message

    def push_front(self, channel: Channel, message: Any) -> None:
        self._channels.setdefault(channel, deque()).appendleft(message)

    def drop(self, channel: Channel) -> int:
        """The stream broke: what was still in flight on it is gone."""
        return len(self._channels.pop(channel, ()))

    def in_flight(self, channel: Channel) -> Iterator[Any]:
        yield from self._channels.get(channel, ())

    def clear(self) -> None:
        self._channels.clear()

    def __bool__(self) -> bool:
        return any(self._channels.values())
