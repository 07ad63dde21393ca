"""The ingress ASGI app: HTTP requests in Restate's shape become invocations of an `Engine`
(calls, sends, attach/output, workflow runs) or complete its awakeables."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from perdure import __version__
from perdure.defaults import RETENTION
from perdure.errors import ConflictError, InvalidInputError, PerdureError, UnknownTargetError
from perdure.ingress import openapi, routing
from perdure.ingress.delay import parse_delay
from perdure.ingress.requests import (
    Disconnected,
    check_content_type,
    declared_length,
    forwarded_headers,
    header,
    query_values,
    read_body,
)
from perdure.ingress.responses import (
    NOT_READY,
    IngressError,
    Receive,
    Send,
    bad_request,
    method_not_allowed,
    not_found,
    respond,
    respond_error,
    respond_json,
    rfc3339,
)
from perdure.protocol import ids
from perdure.runtime import peers
from perdure.runtime.node import Engine
from perdure.runtime.processor import ProcessorStopped
from perdure.sdk.service import Handler
from perdure.storage.api import Failure, Invocation, LeaseLost, Outcome, Status, StoreUnavailable

log = logging.getLogger("perdure.ingress")

Scope = MutableMapping[str, Any]


class Ingress:
    """perdure's HTTP ingress: Restate's ingress API as a plain ASGI app in front of an `Engine`.

        engine = perdure.Engine(app, store="sqlite:///perdure.db")
        ingress = Ingress(engine)
        async with engine:
            served = await perdure.runtime.http.serve(ingress, "127.0.0.1", 8080)
            ...  # curl -X POST localhost:8080/counter/alice/add -H 'content-type: application/json' -d 1

    It can also be mounted in another ASGI app (its `root_path` prefix is stripped). Bodies are
    read incrementally and refused with 413 past `max_body_bytes`. `default_idempotency_retention`
    dates the `idempotency-expires` header of handlers without their own retention when the
    engine has not recorded one.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_body_bytes: int = 10 * 1024 * 1024,
        default_idempotency_retention: timedelta = RETENTION,
        peer: bool = False,
    ) -> None:
        self.engine = engine
        self.max_body_bytes = max_body_bytes
        self.default_idempotency_retention = default_idempotency_retention
        # `peer`: this app serves the node's peer socket (`perdure.runtime.peers`): it takes the
        # invocation ids that forwarding nodes chose, and never forwards again
        self.peer = peer
        self._forwarder: peers.Forwarder | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = False

        async def tracked_send(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self._handle(scope, receive, tracked_send)
        except Disconnected:
            return
        except Exception as e:
            error = _as_ingress_error(e)
            if error.status >= 500 and not isinstance(e, IngressError):
                log.error("ingress failed on %s %s", scope.get("method"), scope.get("path"), exc_info=e)
            if not started:
                await respond_error(send, error)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = _request_path(scope)
        if path == b"/openapi.json":  # one segment: never a handler's path
            if scope["method"] != "GET":
                raise method_not_allowed("GET")
            await respond_json(send, 200, openapi.document(self.engine.services(), __version__))
            return
        found = routing.route(scope["method"], path, self.engine)
        if isinstance(found, routing.Health):
            await respond(send, 200)
        elif isinstance(found, routing.Invocation):
            await self._invocation(found, receive, send)
        elif isinstance(found, routing.Awakeable):
            await self._awakeable(found, scope, receive, send)
        else:
            query = scope.get("query_string", b"")
            ingress_path = path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
            await self._invoke(found, scope, ingress_path, receive, send)

    # ---- calls and sends

    async def _invoke(
        self, target: routing.Invoke, scope: Scope, ingress_path: str, receive: Receive, send: Send
    ) -> None:
        delay = self._delay(target, scope.get("query_string", b""))
        headers = scope["headers"]
        body = await read_body(receive, self.max_body_bytes, declared_length(headers))
        handler = target.handler
        idempotency_key = header(headers, b"idempotency-key")
        if handler.workflow_run and idempotency_key is not None:
            raise bad_request(
                f"the idempotency-key header is not allowed on {handler.qualified_name}, a workflow's run "
                "handler: the workflow key already makes it run once"
            )
        check_content_type(handler, body, header(headers, b"content-type"))
        assigned = header(headers, peers.ASSIGNED_ID) if self.peer else None
        neighbour = None if self.peer else self._neighbour(handler, target.key, idempotency_key)
        if neighbour is not None:
            peer, assigned = neighbour
            if await self._forward(peer, assigned, scope, body, send):
                return
        now = self.engine.clock.now_ms()
        try:
            invocation_id, previously, waiter = await self.engine.submit(
                handler.service.name,
                handler.name,
                body,
                key=target.key,
                idempotency_key=idempotency_key,
                headers=forwarded_headers(headers, ingress_path),
                delay=delay,
                wait=not target.send,
                invocation_id=assigned,
                new=self.peer,  # forwarded once: the peer socket sees a call's first submission
            )
        except ConflictError as e:
            if not handler.workflow_run:
                raise
            # Restate answers a second call of a workflow's run as the invocation's own 409.
            assert target.key is not None
            run_id = ids.workflow_id(handler.service.name, target.key)
            raise IngressError(409, str(e), "invocation", [("x-restate-id", run_id)]) from None
        if target.send:
            inv = self.engine.reader().get_invocation(invocation_id) if previously else None
            accepted: dict[str, str] = {
                "invocationId": invocation_id,
                "status": "PreviouslyAccepted" if previously else "Accepted",
            }
            execute_at = inv.execute_at if inv is not None and inv.status is Status.SCHEDULED else None
            if execute_at is None and delay is not None and not previously:
                execute_at = now + int(delay.total_seconds() * 1000)
            if execute_at is not None:
                accepted["executionTime"] = rfc3339(execute_at)
            await respond_json(send, 202, accepted, headers=self._id_headers(invocation_id, inv))
            return
        assert waiter is not None
        outcome = await self._wait(invocation_id, receive, waiter)
        if outcome is not None:
            await self._respond_outcome(send, invocation_id, outcome, handler, idempotency_key is not None)

    def _neighbour(
        self, handler: Handler, key: str | None, idempotency_key: str | None
    ) -> tuple[Path, str | None] | None:
        """Where to forward this call — the peer socket of the node on this machine that runs its
        partition — with the id to give it (None: the id follows from the request); None to take
        it here (a partition of this node or of another machine, or a service call: it runs in a
        partition of this node)."""
        cluster = self.engine.cluster
        if cluster is None or not peers.enabled():
            return None
        service = handler.service.name
        if key is not None:
            partition_key = ids.partition_key(service, key)
        elif idempotency_key is not None:
            partition_key = ids.partition_key_of(
                ids.idempotent_id(service, handler.name, key, idempotency_key)
            )
        else:
            return None
        node = cluster.neighbour_for(partition_key % cluster.database.partitions)
        if node is None:
            return None
        fresh = idempotency_key is None and not handler.workflow_run
        return peers.socket_path(node), ids.random_id(service, key) if fresh else None

    async def _forward(
        self, peer: Path, invocation_id: str | None, scope: Scope, body: bytes, send: Send
    ) -> bool:
        """Pass the call on to `peer` and relay its answer; False when it must be taken here instead
        (the peer could not be reached, or its answer was lost: then with the same id, so a call
        the peer accepted is found, not made twice)."""
        forwarder = self._forwarder
        if forwarder is None:
            cluster = self.engine.cluster
            assert cluster is not None
            forwarder = self._forwarder = peers.Forwarder(cluster.node)
        target = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        try:
            status, headers, answer = await forwarder.forward(
                peer,
                scope["method"],
                target + b"?" + query if query else target,
                scope["headers"],
                body,
                invocation_id=invocation_id,
            )
        except (peers.Unreachable, peers.Broken) as e:
            log.info("forwarding a call to %s failed (%s): taking it here", peer.name, e)
            return False
        self.engine.counters.calls_forwarded += 1
        await send({"type": "http.response.start", "status": status, "headers": peers.relayed(headers)})
        await send({"type": "http.response.body", "body": answer})
        return True

    def _delay(self, target: routing.Invoke, query: bytes) -> timedelta | None:
        values = query_values(query, "delay") if query else []
        if not values:
            return None
        if not target.send:
            raise bad_request(
                "cannot use the delay query parameter with calls. The delay is supported only with sends"
            )
        try:
            delay = parse_delay(values[-1])
        except ValueError as e:
            raise bad_request(f"bad delay query parameter: {e}") from None
        return delay or None

    # ---- awakeables

    async def _awakeable(self, target: routing.Awakeable, scope: Scope, receive: Receive, send: Send) -> None:
        """202 once the completion is durable; also when the awakeable was already completed, or its
        invocation is unknown (completed and purged, or never existed): as Restate, nothing to report."""
        headers = scope["headers"]
        body = await read_body(receive, self.max_body_bytes, declared_length(headers))
        try:
            if target.verb == "resolve":
                await self.engine.complete_awakeable(target.awakeable_id, value=body)
            else:
                reason = body.decode("utf-8", errors="replace")
                await self.engine.complete_awakeable(target.awakeable_id, failure=Failure(500, reason))
        except UnknownTargetError:
            log.info("awakeable %s of an unknown invocation: ignored", target.awakeable_id)
        await respond(send, 202)

    # ---- attach and output

    async def _invocation(self, target: routing.Invocation, receive: Receive, send: Send) -> None:
        reader = self.engine.reader()
        inv = reader.get_invocation(target.invocation_id)
        if target.verb == "output":
            if inv is None:
                raise not_found("not found", source="invocation")
            if inv.outcome is None or inv.completed_at is None:
                raise IngressError(NOT_READY, "the invocation exists but has not completed yet")
            outcome: Outcome | None = inv.outcome
        else:
            try:  # in a cluster, one just sent to another node's partition may not be stored yet
                waiter = self.engine.outcome_waiter(target.invocation_id)
            except UnknownTargetError:
                raise not_found("not found", source="invocation") from None
            outcome = await self._wait(target.invocation_id, receive, waiter)
            inv = inv or reader.get_invocation(target.invocation_id)  # stored once it completed
        if outcome is not None:  # (inv None: purged as soon as it completed — answer all the same)
            handler = self.engine.handler(inv.service, inv.handler) if inv is not None else None
            idempotent = inv is not None and inv.idempotency_key is not None
            await self._respond_outcome(send, target.invocation_id, outcome, handler, idempotent)

    async def _wait(
        self, invocation_id: str, receive: Receive, waiter: asyncio.Future[Outcome]
    ) -> Outcome | None:
        """The invocation's outcome, or None when the client disconnected first (it runs on)."""
        if waiter.done():
            return waiter.result()
        gone = asyncio.ensure_future(_disconnect(receive))
        try:
            await asyncio.wait((waiter, gone), return_when=asyncio.FIRST_COMPLETED)
            if waiter.cancelled():
                raise IngressError(503, "the engine stopped before the invocation completed")
            return waiter.result() if waiter.done() else None
        finally:
            gone.cancel()
            self.engine.release_waiter(invocation_id, waiter)

    # ---- answers

    async def _respond_outcome(
        self, send: Send, invocation_id: str, outcome: Outcome, handler: Handler | None, idempotent: bool
    ) -> None:
        # Only idempotent requests need the stored record (for `idempotency-expires`).
        inv = self.engine.reader().get_invocation(invocation_id) if idempotent else None
        headers = self._id_headers(invocation_id, inv)
        if outcome.failure is not None:
            failure = outcome.failure
            raise IngressError(failure.code, failure.message, "invocation", headers)
        value = outcome.value or b""
        content_type = handler.output_serde.content_type if handler is not None else None
        await respond(send, 200, value, content_type=content_type if value else None, headers=headers)

    def _id_headers(self, invocation_id: str, inv: Invocation | None) -> list[tuple[str, str]]:
        headers = [("x-restate-id", invocation_id)]
        if inv is not None and inv.idempotency_key is not None and inv.completed_at is not None:
            expires = inv.retention_until
            if expires is None:
                handler = self.engine.handler(inv.service, inv.handler)
                retention = handler.options.idempotency_retention if handler is not None else None
                retention = retention or self.default_idempotency_retention
                expires = inv.completed_at + int(retention.total_seconds() * 1000)
            headers.append(("idempotency-expires", rfc3339(expires)))
        return headers


def _request_path(scope: Scope) -> bytes:
    """The raw (still URL-encoded) path below the app's mount point."""
    raw: bytes | None = scope.get("raw_path")
    if raw is None:
        raw = scope["path"].encode("utf-8")
    raw = raw.split(b"?", 1)[0]
    root = scope.get("root_path", "").encode("utf-8")
    if root and raw.startswith(root):
        raw = raw[len(root) :]
    return raw


def _as_ingress_error(e: Exception) -> IngressError:
    if isinstance(e, IngressError):
        return e
    if isinstance(e, InvalidInputError):
        return bad_request(f"input validation error: {e}")
    if isinstance(e, UnknownTargetError):
        return not_found(str(e))
    if isinstance(e, ConflictError):
        return IngressError(409, str(e))
    if isinstance(e, PerdureError | ProcessorStopped | StoreUnavailable | LeaseLost):
        return IngressError(503, f"unavailable: {e}")
    return IngressError(500, f"internal error: {type(e).__name__}")


async def _disconnect(receive: Receive) -> None:
    """Returns once the client has gone away."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _lifespan(receive: Receive, send: Send) -> None:
    """Accept the server's startup and shutdown: the engine's lifecycle is its owner's."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
