"""The scenario deployment with a wiretap: what restate-server actually sent and got back.

`hypercorn interop.wiretap:app` serves `perdure_services.app` and records, per invoke request,
the HTTP version, the negotiated protocol version and the frames in both directions (message
names, in order). `GET /wiretap` returns the records as JSON.
"""

from __future__ import annotations

import json
from typing import Any

from perdure.protocol import messages as pm
from perdure.protocol.codec import FrameDecoder

from .perdure_services import app as services

records: list[dict[str, Any]] = []


def _name(message: Any) -> str:
    return str(pm.NAME_OF.get(pm.type_of(message), type(message).__name__))


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http" or "/invoke/" not in scope["path"]:
        if scope["type"] == "http" and scope["path"] == "/wiretap":
            if scope["method"] == "DELETE":
                records.clear()
            body = json.dumps(records).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        await services(scope, receive, send)
        return
    headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    record: dict[str, Any] = {
        "path": scope["path"],
        "target": scope["path"].rsplit("/invoke/", 1)[1],
        "http_version": scope["http_version"],
        "content_type": headers.get("content-type"),
        "invocation_id": headers.get("x-restate-invocation-id"),
        "in": [],
        "out": [],
    }
    records.append(record)
    inbound, outbound = FrameDecoder(), FrameDecoder()

    async def tapped_receive() -> Any:
        event = await receive()
        for message, _flags in inbound.feed(event.get("body", b"")):
            entry = _name(message)
            if isinstance(message, pm.StartMessage):
                entry += f"(known_entries={message.known_entries})"
            record["in"].append(entry)
        return event

    async def tapped_send(event: Any) -> None:
        if event["type"] == "http.response.start":
            record["status"] = event["status"]
        for message, flags in outbound.feed(event.get("body", b"")):
            record["out"].append(_name(message) + ("+ack" if flags else ""))
        await send(event)

    await services(scope, tapped_receive, tapped_send)
