"""bench/core.py's seed handler written with the official Restate Python SDK, for bench/remote.py.

Served by hypercorn (`PYTHONPATH=bench hypercorn remote_services:app`, h2c and HTTP/1.1 on one
port) and registered with perdure or restate-server as a remote deployment. The handler mirrors
core.py's: exclusive, 3 `ctx.run` + 1 `ctx.set`, the same always-ready "external systems".

Completions are counted here, in the SDK process, so both engines are observed the same way: a
handler that reaches its end records its invocation id (once; a retried attempt that reaches the
end again is not counted twice) and `time.monotonic()` (system-wide on Linux). Two side routes,
answered before the SDK sees the request:

    GET  /bench/completions  -> {"count", "first", "last"}
    GET  /bench/completions?tags=1 -> also "tags": {resource tag (`disk-{i}`): monotonic time}
    POST /bench/reset        -> forget what was counted (after a warm-up)

With `BENCH_MAX_PROTOCOL=6` in the environment the discovery manifest announces service protocol
V6 at most (the SDK says 5-7), so an engine that would pick V7 uses V6 like restate-server's default.

A completion is counted when the handler returns, just before the SDK sends its output: the
engine's durable commit of the result comes a moment later (the same moment for both engines).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import msgspec
import restate
from restate import ObjectContext, VirtualObject


class UserUpdate(msgspec.Struct):
    """core.py's event (a msgspec Struct: the SDK decodes dataclasses only with `dacite` installed)."""

    profile: dict[str, str]
    permissions: list[str] = []
    resources: list[str] = []


def update_profile(profile: dict[str, str]) -> str:
    return f"user-{profile['name']}"


def set_permissions(user_id: str, permissions: list[str]) -> str:
    return f"role-{'-'.join(sorted(permissions)) or 'none'}"


def provision_resources(user_id: str, role_id: str, resources: list[str]) -> bool:
    return True


class Completions:
    """Invocations that reached the handler's end: id -> (resource tag, when)."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[str, float]] = {}

    def add(self, invocation_id: str, tag: str) -> None:
        if invocation_id not in self.seen:
            self.seen[invocation_id] = (tag, time.monotonic())

    def summary(self, tags: bool) -> dict[str, Any]:
        times = [at for _, at in self.seen.values()]
        answer: dict[str, Any] = {
            "count": len(times),
            "first": min(times, default=None),
            "last": max(times, default=None),
        }
        if tags:
            answer["tags"] = {tag: at for tag, at in self.seen.values()}
        return answer


completions = Completions()
max_protocol = int(os.environ.get("BENCH_MAX_PROTOCOL") or 0)  # 0: the manifest as the SDK writes it
user_updates = VirtualObject("userUpdates")


@user_updates.handler("updateUserEvent")
async def update_user_event(ctx: ObjectContext, event: UserUpdate) -> str:
    user_id = await ctx.run_typed("update profile", update_profile, profile=event.profile)
    role_id = await ctx.run_typed(
        "set permissions", set_permissions, user_id=user_id, permissions=event.permissions
    )
    await ctx.run_typed(
        "provision resources",
        provision_resources,
        user_id=user_id,
        role_id=role_id,
        resources=event.resources,
    )
    ctx.set("role", role_id)
    completions.add(ctx.request().id, event.resources[0] if event.resources else "")
    return role_id


sdk_app = restate.app([user_updates])


async def _answer(send: Any, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _capped(send: Any) -> Any:
    """`send` for a discovery answer: maxProtocolVersion lowered to `max_protocol`."""
    held: dict[str, Any] = {}

    async def capped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            held.update(message)
            return
        if message["type"] == "http.response.body" and held:
            body = message.get("body", b"")
            if held["status"] == 200:
                manifest = json.loads(body)
                manifest["maxProtocolVersion"] = min(manifest["maxProtocolVersion"], max_protocol)
                body = json.dumps(manifest).encode()
            headers = [(k, v) for k, v in held["headers"] if k.lower() != b"content-length"]
            await send({**held, "headers": headers})
            held.clear()
            message = {**message, "body": body}
        await send(message)

    return capped


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The SDK's ASGI app, with the two /bench routes in front of it."""
    if scope["type"] == "http" and scope["path"].startswith("/bench/"):
        if scope["path"] == "/bench/completions":
            summary = completions.summary(tags=scope.get("query_string") == b"tags=1")
            await _answer(send, json.dumps(summary).encode())
            return
        if scope["path"] == "/bench/reset":
            completions.seen.clear()
            await _answer(send, b"{}")
            return
    if max_protocol and scope["type"] == "http" and scope["path"].rstrip("/").endswith("/discover"):
        send = _capped(send)
    await sdk_app(scope, receive, send)
