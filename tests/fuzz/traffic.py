"""Real protocol traffic, recorded from the official Python SDK (`restate-sdk`) in-process.

`record()` plays the runtime's side for a few of the interop scenario's handlers, request by
request (request/response mode over the SDK's ASGI app, no network): it sends the journal so
far, keeps the frames the SDK answers with, completes what they wait for (a run's proposal, a
sleep, a call) and sends the longer journal again, until the SDK ends the invocation. Each
exchange yields a request body (journal frames that the SDK accepted) and a response body (the
SDK's own frames) — the seeds the protocol fuzzers mutate.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from endpoint.asgi import Exchange, frames, input_command, start_message
from perdure.protocol import messages as pm
from perdure.protocol.codec import decode_frames

#: (service, handler, key, input) of the official scenario handlers recorded.
SCENARIOS = [
    ("Journey", "travel", "ann", {"traveller": "ann", "stops": 3}),
    ("Counter", "add", "c", 5),
    ("Greeter", "greet", "", "bob"),
    ("Postbox", "post", "p", "hello"),
    ("Signup", "status", "s", None),
]


@dataclass(frozen=True)
class Exchanged:
    target: str
    request: bytes  # Start + journal frames, as a runtime sends them
    response: bytes  # the SDK's frames


async def record() -> list[Exchanged]:
    from interop.official_services import app  # the official SDK: imported when recording

    out: list[Exchanged] = []
    for service, handler, key, argument in SCENARIOS:
        journal: list[Any] = [input_command(b"" if argument is None else json.dumps(argument).encode())]
        for _ in range(8):
            start = start_message(known_entries=len(journal), key=key, state={})
            request = frames(start, *journal)
            exchange = Exchange(app, f"/invoke/{service}/{handler}", version=5, http_version="1.1").begin()
            exchange.feed(raw=request, more=False)
            await exchange.done(within=10)
            out.append(Exchanged(f"{service}/{handler}", request, exchange.body))
            answered = [message for message, _ in decode_frames(exchange.body)]
            if any(isinstance(m, pm.EndMessage | pm.ErrorMessage) for m in answered):
                break
            journal += _completed(answered, len(journal))
    return out


def _completed(answered: list[Any], length: int) -> list[Any]:
    """The commands the SDK sent, each followed by the notifications that complete it."""
    more: list[Any] = []
    for m in answered:
        if isinstance(m, pm.ProposeRunCompletionMessage):
            more.append(
                pm.RunCompletion(completion_id=m.result_completion_id, value=pm.Value(content=m.value))
            )
            continue
        if not pm.is_command(pm.type_of(m)):
            continue
        more.append(m)
        if isinstance(m, pm.SleepCommand):
            more.append(pm.SleepCompletion(completion_id=m.result_completion_id, void=pm.Void()))
        elif isinstance(m, pm.CallCommand | pm.OneWayCallCommand):
            child = f"inv_1{length:033d}"
            more.append(
                pm.CallInvocationIdCompletion(
                    completion_id=m.invocation_id_notification_idx, invocation_id=child
                )
            )
            if isinstance(m, pm.CallCommand):
                value = pm.Value(content=b'"hello ann"')
                more.append(pm.CallCompletion(completion_id=m.result_completion_id, value=value))
        elif isinstance(m, pm.GetLazyStateCommand):
            more.append(pm.GetLazyStateCompletion(completion_id=m.result_completion_id, void=pm.Void()))
    return more


def recorded() -> list[Exchanged]:
    return asyncio.run(record())
