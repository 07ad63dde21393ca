"""perdure's SDK as a deployment: an ASGI app speaking Restate's service protocol (V5–V7).

An `App` is itself this ASGI app, so any Restate-compatible runtime (restate-server, perdure's
engine over HTTP) can register and invoke its handlers:

    app = perdure.App([counter, greeter])       # hypercorn module:app   (HTTP/1.1 and h2c)
                                                # uvicorn module:app     (HTTP/1.1)

Routes (any prefix before them is ignored, as in Restate's SDKs):

- `GET /discover` — the endpoint manifest (`perdure.sdk.discovery`) in the highest version the
  `accept` header names (v1–v4; 415 when it names none). The protocol mode is decided per
  request, as Restate's Python SDK does: HTTP/2 → `BIDI_STREAM`, HTTP/1.1 → `REQUEST_RESPONSE`
  (register over the HTTP version you will be invoked with); `Endpoint(app, protocol_mode=...)`
  pins it.
- `POST /invoke/{service}/{handler}` — one attempt. The version comes from `content-type`
  (`application/vnd.restate.invocation.v5|6|7`, else 415); unknown targets get 404. The response
  head goes out at once; frames are read (Start, then `known_entries` journal entries), the
  handler runs, and its frames stream out as they are produced. Frames arriving while it runs
  (notifications, V7 run acks) are delivered to it; once the runtime closes its side of the
  stream (always, in request/response mode), a handler waiting on anything not yet there
  suspends. The response ends after End, Suspension or Error — only after the runtime has closed
  its side, as hypercorn drops an HTTP/2 stream whose response ends first. A malformed stream
  ends the attempt with an `ErrorMessage` (571).
- `GET /health` — 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Literal

from perdure.protocol import manifest as pmanifest
from perdure.protocol import messages as pm
from perdure.protocol.codec import REQUESTED_ACK, FrameDecoder, ProtocolError, encode_frame
from perdure.protocol.vm import VM
from perdure.sdk import discovery
from perdure.sdk.attempt import Attempt
from perdure.sdk.service import App, Handler

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("perdure.endpoint")

_INVOCATION = re.compile(r"^application/vnd\.restate\.invocation\.v(\d+)$")
_ENDING = (pm.EndMessage, pm.SuspensionMessage, pm.ErrorMessage)


def _version() -> str:
    try:
        return importlib.metadata.version("perdure")
    except importlib.metadata.PackageNotFoundError:
        return "0"


SERVER = f"perdure/{_version()}"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _respond(send: Send, status: int, body: bytes, content_type: str = "text/plain") -> None:
    headers = [(b"content-type", content_type.encode()), (b"x-restate-server", SERVER.encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _refuse(receive: Receive, send: Send, status: int, text: str) -> None:
    """An error status for a request whose body may still be streaming: head first, then the
    request is drained (an HTTP/2 runtime may wait for the head before it ends its side)."""
    headers = [(b"content-type", b"text/plain"), (b"x-restate-server", SERVER.encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            return
        if event["type"] == "http.request" and not event.get("more_body", False):
            break
    await send({"type": "http.response.body", "body": text.encode(), "more_body": False})


class Endpoint:
    """The ASGI app serving an `App` as a deployment; `App.__call__` delegates to a default one.

    `protocol_mode` pins what `/discover` announces ("bidi" or "request_response"); by default
    it follows each discovery request's HTTP version.

        application = Endpoint(app, protocol_mode="request_response")
    """

    def __init__(
        self,
        app: App,
        *,
        protocol_mode: Literal["bidi", "request_response"] | None = None,
        now_ms: Callable[[], int] | None = None,
    ) -> None:
        self.app = app
        self.protocol_mode = protocol_mode
        self._now_ms = now_ms or (lambda: int(time.time() * 1000))
        self._manifests: dict[tuple[int, str], bytes] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise RuntimeError(f"perdure's endpoint serves HTTP, not {scope['type']!r}")
        parts = str(scope["path"]).rstrip("/").rsplit("/", 3)
        if len(parts) == 4 and parts[1] == "invoke":
            await self._invoke(scope, receive, send, parts[2], parts[3])
        elif parts[-1] == "discover":
            await self._discover(scope, send)
        elif parts[-1] == "health":
            await _respond(send, 200, b'{"status":"ok"}', "application/json")
        else:
            await _refuse(receive, send, 404, f"no such route: {scope['path']}")

    # ---- discovery

    def manifest_bytes(self, version: int, mode: discovery.ProtocolMode) -> bytes:
        """The encoded manifest (cached); raises `discovery.ManifestVersionError`."""
        key = (version, mode)
        if key not in self._manifests:
            built = discovery.manifest(self.app, version=version, protocol_mode=mode)
            self._manifests[key] = discovery.encode(built)
        return self._manifests[key]

    async def _discover(self, scope: Scope, send: Send) -> None:
        accept = _header(scope, b"accept")
        version = pmanifest.accepted_version(accept)
        if version is None:
            known = ", ".join(pmanifest.CONTENT_TYPE.format(v) for v in (1, 2, 3, 4))
            text = (
                f"unsupported endpoint manifest version in accept: {accept!r}; this endpoint serves {known}"
            )
            await _respond(send, 415, text.encode())
            return
        if self.protocol_mode is not None:
            mode: discovery.ProtocolMode = (
                "BIDI_STREAM" if self.protocol_mode == "bidi" else "REQUEST_RESPONSE"
            )
        else:
            mode = "BIDI_STREAM" if scope.get("http_version") == "2" else "REQUEST_RESPONSE"
        try:
            body = self.manifest_bytes(version, mode)
        except discovery.ManifestVersionError as e:
            await _respond(send, 415, str(e).encode())
            return
        await _respond(send, 200, body, pmanifest.CONTENT_TYPE.format(version))

    # ---- invocation

    async def _invoke(self, scope: Scope, receive: Receive, send: Send, service: str, name: str) -> None:
        handler = self.app.handler(service, name)
        if handler is None:
            await _refuse(receive, send, 404, f"no handler {service}/{name} in this deployment")
            return
        if scope.get("method", "POST") != "POST":
            await _refuse(receive, send, 405, "invoke with POST")
            return
        content_type = (_header(scope, b"content-type") or "").strip()
        match = _INVOCATION.match(content_type)
        version = int(match.group(1)) if match else 0
        if not pmanifest.MIN_PROTOCOL <= version <= pmanifest.MAX_PROTOCOL:
            text = (
                f"unsupported service protocol {content_type!r}: this endpoint speaks "
                f"application/vnd.restate.invocation.v{pmanifest.MIN_PROTOCOL} to "
                f"v{pmanifest.MAX_PROTOCOL}"
            )
            await _refuse(receive, send, 415, text)
            return
        headers = [(b"content-type", content_type.encode()), (b"x-restate-server", SERVER.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await _Stream(handler, version, receive, send, self._now_ms).run()


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        event = await receive()
        if event["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif event["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class _Stream:
    """One attempt over one HTTP exchange: frames in from the request, frames out in the response."""

    def __init__(
        self, handler: Handler, version: int, receive: Receive, send: Send, now_ms: Callable[[], int]
    ):
        self.handler = handler
        self.version = version
        self._receive = receive
        self._send = send
        self._now_ms = now_ms
        self._decoder = FrameDecoder()
        self._out: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._closed = asyncio.Event()  # the runtime ended its side (or went away)
        self._disconnected = False
        self._ended = False  # an End, Suspension or Error frame is queued

    # ---- input

    async def _frames(self) -> list[Any]:
        """The messages of the next request event ([] once the request is over)."""
        if self._closed.is_set():
            return []
        event = await self._receive()
        if event["type"] == "http.disconnect":
            self._disconnected = True
            self._closed.set()
            return []
        last = not event.get("more_body", False)
        if last:  # before decoding, which may raise: nothing more is to be read either way
            self._closed.set()
        messages = [message for message, _flags in self._decoder.feed(event.get("body", b""))]
        if last and self._decoder.pending:
            raise ProtocolError(f"the request ended inside a frame ({self._decoder.pending} bytes left over)")
        return messages

    async def _drain(self) -> None:
        """Read and drop the rest of the request (after a violation its frames mean nothing)."""
        while not self._closed.is_set():
            event = await self._receive()
            if event["type"] == "http.disconnect":
                self._disconnected = True
                self._closed.set()
            elif not event.get("more_body", False):
                self._closed.set()

    async def _read_journal(self) -> tuple[Any, list[Any], list[Any]]:
        """(StartMessage, its `known_entries` journal entries, messages that followed them)."""
        start: Any = None
        journal: list[Any] = []
        extra: list[Any] = []
        while start is None or len(journal) < start.known_entries:
            if self._closed.is_set():
                if start is None:
                    raise ProtocolError("the request ended before a StartMessage")
                raise ProtocolError(
                    f"the request ended after {len(journal)} of {start.known_entries} journal entries"
                )
            for message in await self._frames():
                if start is None:
                    if not isinstance(message, pm.StartMessage):
                        raise ProtocolError(f"expected a StartMessage first, got {type(message).__name__}")
                    start = message
                elif len(journal) < start.known_entries:
                    journal.append(message)
                else:
                    extra.append(message)
        return start, journal, extra

    # ---- output

    def _emit(self, messages: list[Any]) -> None:
        """The attempt's output: encoded and queued in order (written by `run`)."""
        if self._ended:
            return
        chunk = bytearray()
        for message in messages:
            ack = self.version >= 7 and isinstance(message, pm.ProposeRunCompletionMessage)
            chunk += encode_frame(message, flags=REQUESTED_ACK if ack else 0)
            if isinstance(message, _ENDING):
                self._ended = True
                break
        self._out.put_nowait(bytes(chunk))

    def _violation(self, error: ProtocolError) -> None:
        log.warning("%s: protocol violation: %s", self.handler.qualified_name, error)
        self._emit([pm.ErrorMessage(code=pm.PROTOCOL_VIOLATION, message=str(error))])
        self._out.put_nowait(None)

    async def _pump(self) -> None:
        """Write queued frames (whatever is ready goes in one chunk) until the end marker."""
        last = False
        while not last:
            parts: list[bytes] = []
            item = await self._out.get()
            while True:
                if item is None:
                    last = True
                    break
                parts.append(item)
                if self._out.empty():
                    break
                item = self._out.get_nowait()
            if parts and not self._disconnected:
                await self._send({"type": "http.response.body", "body": b"".join(parts), "more_body": True})

    # ---- driving

    async def run(self) -> None:
        runner: asyncio.Task[None] | None = None
        reader: asyncio.Task[None] | None = None
        try:
            try:
                start, journal, extra = await self._read_journal()
                vm = VM(start, journal, handler=self.handler.qualified_name, version=self.version)
                attempt = Attempt(self.handler, vm, send=self._emit, now_ms=self._now_ms)
                for message in extra:
                    attempt.notify(message)
            except ProtocolError as e:
                if self._disconnected:
                    return
                self._violation(e)
            else:
                if self._closed.is_set():
                    attempt.suspend()  # request/response: nothing more will come
                runner = asyncio.create_task(attempt.execute(), name=f"perdure-{vm.invocation_id}")
                runner.add_done_callback(lambda _: self._out.put_nowait(None))
                reader = asyncio.create_task(self._read_rest(attempt, runner))
            await self._pump()
            # Close our side only after the runtime closed its own.
            if reader is None:
                await self._drain()
            else:
                await self._closed.wait()
            if not self._disconnected:
                await self._send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            for task in (reader, runner):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if runner is not None and runner.done() and not runner.cancelled() and runner.exception():
                log.error("attempt of %s crashed", self.handler.qualified_name, exc_info=runner.exception())

    async def _read_rest(self, attempt: Attempt, runner: asyncio.Task[None]) -> None:
        """Deliver notifications while the handler runs; suspend it once the runtime stops talking."""
        try:
            while not self._closed.is_set():
                for message in await self._frames():
                    attempt.notify(message)
        except ProtocolError as e:
            if not self._ended:
                attempt.abort()
                runner.cancel()
                self._violation(e)
            await self._drain()
            return
        if self._disconnected:
            runner.cancel()  # no one is listening: the runtime will retry
            return
        attempt.suspend()
        # Watch for the runtime going away while the handler still runs (an abort on its side).
        with contextlib.suppress(Exception):
            while (await self._receive())["type"] != "http.disconnect":
                pass
            self._disconnected = True
            runner.cancel()
