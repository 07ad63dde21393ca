"""Driving the endpoint as an ASGI app by hand: request body chunks in, response events out.

`Exchange` plays the runtime's side of one HTTP request with full control over when frames
arrive and when the request body ends — what a bidirectional HTTP/2 stream allows.
"""

from __future__ import annotations

import asyncio
from typing import Any

from perdure.protocol import messages as pm
from perdure.protocol.codec import FrameDecoder, encode_frame

V = "application/vnd.restate.invocation.v{}"


def start_message(
    *, known_entries: int = 1, key: str = "", state: dict[bytes, bytes] | None = None, **fields: Any
) -> Any:
    """A StartMessage with a fixed id (awakeable ids and random seeds derive from it)."""
    message = pm.StartMessage(
        id=bytes(range(24)),
        debug_id="inv_1test",
        known_entries=known_entries,
        key=key,
        partial_state=state is None,
        **fields,
    )
    for k, v in (state or {}).items():
        message.state_map.add(key=k, value=v)
    return message


def input_command(body: bytes) -> Any:
    return pm.InputCommand(value=pm.Value(content=body))


def frames(*messages: Any) -> bytes:
    return b"".join(encode_frame(m) for m in messages)


def names(decoded: list[tuple[Any, int]]) -> list[str]:
    return [pm.NAME_OF[pm.type_of(m)] for m, _ in decoded]


class Exchange:
    """One request to `app`; call `begin()`, then `feed()`/`close()` and read `frames()`."""

    def __init__(
        self,
        app: Any,
        path: str,
        *,
        version: int = 6,
        http_version: str = "2",
        method: str = "POST",
        headers: dict[str, str] | None = None,
    ) -> None:
        hdrs = {"content-type": V.format(version), **(headers or {})}
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": http_version,
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(k.encode(), v.encode()) for k, v in hdrs.items()],
        }
        self.app = app
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._decoder = FrameDecoder()
        self._pending: list[tuple[Any, int]] = []
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = b""
        self.ended = False  # the response's last body event (more_body False) was sent
        self.task: asyncio.Task[None] | None = None

    def begin(self) -> Exchange:
        self.task = asyncio.get_running_loop().create_task(self.app(self.scope, self._receive, self._send))
        return self

    async def _receive(self) -> dict[str, Any]:
        return await self._inbox.get()

    async def _send(self, event: dict[str, Any]) -> None:
        assert not self.ended, f"event after the response ended: {event}"
        if event["type"] == "http.response.start":
            self.status = event["status"]
            self.headers = {k.decode(): v.decode() for k, v in event.get("headers", [])}
        elif event["type"] == "http.response.body":
            self.body += event.get("body", b"")
            self.ended = not event.get("more_body", False)
        await self._events.put(event)

    def feed(self, *messages: Any, raw: bytes = b"", more: bool = True) -> None:
        self._inbox.put_nowait({"type": "http.request", "body": frames(*messages) + raw, "more_body": more})

    def close(self) -> None:
        """End the request body (the runtime closes its side)."""
        self.feed(more=False)

    def disconnect(self) -> None:
        self._inbox.put_nowait({"type": "http.disconnect"})

    async def frames(self, count: int, within: float = 5.0) -> list[tuple[Any, int]]:
        """The next `count` frames of the response (fails after `within` seconds)."""
        async with asyncio.timeout(within):
            while len(self._pending) < count:
                event = await self._events.get()
                self._pending += list(self._decoder.feed(event.get("body", b"")))
        got, self._pending = self._pending[:count], self._pending[count:]
        return got

    async def done(self, within: float = 5.0) -> None:
        assert self.task is not None
        async with asyncio.timeout(within):
            await self.task

    async def idle(self, seconds: float = 0.1) -> bool:
        """True when no frame (nor the response's end) arrives for `seconds`."""
        if self._pending:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                event = await asyncio.wait_for(self._events.get(), left)
            except TimeoutError:
                return True
            if event["type"] == "http.response.body" and (event.get("body") or not event.get("more_body")):
                self._pending += list(self._decoder.feed(event.get("body", b"")))
                return False
        return True
