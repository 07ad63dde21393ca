"""A tiny stand-in for the engine: starts attempts, collects what they submit, answers results."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

from perdure.engine.actions import Notify, StartAttempt
from perdure.engine.commands import AttemptOutput
from perdure.protocol import ids
from perdure.protocol import messages as pm
from perdure.protocol.codec import message_type
from perdure.runtime.clock import SystemClock
from perdure.runtime.remote import RemoteInvoker, RemoteOptions
from perdure.storage.api import Deployment

ENDS = (pm.EndMessage, pm.SuspensionMessage, pm.ErrorMessage)
WAIT_S = 20.0


def deployment(uri: str, *, bidi: bool, http: str, version: int = 6, dp: str = "dp_test") -> Deployment:
    return Deployment(
        id=dp,
        uri=uri,
        protocol_mode="BIDI_STREAM" if bidi else "REQUEST_RESPONSE",
        http_version=http,
        min_protocol_version=5,
        max_protocol_version=7,
        protocol_version=version,
    )


class Driver:
    """Runs attempts against one deployment and, like the engine, journals and answers them.

    With `answer=True` run proposals get their RunCompletion and sleeps their SleepCompletion
    (bidi); the journal of each invocation grows like the engine's, so `resume` replays it.
    """

    def __init__(self, dep: Deployment, *, answer: bool = True, options: RemoteOptions | None = None) -> None:
        self.deployment = dep
        self.answer = answer
        self.clock = SystemClock()
        self.invoker = RemoteInvoker(self.submit, self.clock, self._deployment_of, options=options)
        self.outputs: list[AttemptOutput] = []
        self.journals: dict[str, list[Any]] = {}
        self.keys: dict[str, str | None] = {}
        self.services: dict[str, tuple[str, str]] = {}
        self.attempts: dict[str, int] = {}
        self._changed = asyncio.Event()

    def _deployment_of(self, deployment_id: str) -> Deployment | None:
        return self.deployment if deployment_id == self.deployment.id else None

    # ---- starting

    def call(self, service: str, handler: str, argument: Any, *, key: str | None = None) -> str:
        invocation_id = ids.random_id(service, key)
        value = json.dumps(argument).encode()
        self.journals[invocation_id] = [pm.InputCommand(value=pm.Value(content=value))]
        self.keys[invocation_id] = key
        self.services[invocation_id] = (service, handler)
        self.attempts[invocation_id] = 0
        self.resume(invocation_id)
        return invocation_id

    def resume(self, invocation_id: str) -> None:
        """Start the next attempt, replaying the journal so far."""
        journal = list(self.journals[invocation_id])
        key = self.keys[invocation_id]
        start = pm.StartMessage(
            id=ids.to_bytes(invocation_id),
            debug_id=invocation_id,
            known_entries=len(journal),
            key=key or "",
            partial_state=True,
            random_seed=7,
        )
        self.attempts[invocation_id] += 1
        service, handler = self.services[invocation_id]
        self.invoker.start(
            StartAttempt(
                invocation_id,
                self.attempts[invocation_id],
                service,
                handler,
                start,
                journal,
                deployment_id=self.deployment.id,
                protocol_version=self.deployment.protocol_version,
            )
        )

    # ---- the engine's side

    def submit(self, output: AttemptOutput) -> None:
        self.outputs.append(output)
        self._changed.set()
        if output.attempt != self.attempts.get(output.invocation_id):
            return
        journal = self.journals[output.invocation_id]
        for message in output.messages:
            code = message_type(message)
            if pm.is_command(code):
                journal.append(message)
            elif isinstance(message, pm.ProposeRunCompletionMessage):
                result = pm.RunCompletion(completion_id=message.result_completion_id)
                result.value.content = message.value
                journal.append(result)
                self._later(output, result, 0)
            if isinstance(message, pm.SleepCommand):
                wake = pm.SleepCompletion(completion_id=message.result_completion_id, void=pm.Void())
                delay = max(0, message.wake_up_time - self.clock.now_ms()) / 1000
                self._later(output, wake, delay, journal_it=True)

    def _later(self, output: AttemptOutput, message: Any, delay: float, *, journal_it: bool = False) -> None:
        """Answer asynchronously, as the engine does once its batch is durable."""
        if not self.answer:
            return

        def send() -> None:
            if journal_it:
                self.journals[output.invocation_id].append(message)
            self.invoker.notify(Notify(output.invocation_id, output.attempt, [message]))

        asyncio.get_running_loop().call_later(delay, send)

    # ---- waiting

    def messages(self, invocation_id: str, attempt: int | None = None) -> list[Any]:
        return [
            m
            for o in self.outputs
            if o.invocation_id == invocation_id and (attempt is None or o.attempt == attempt)
            for m in o.messages
        ]

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait (at most WAIT_S) until `condition()` holds, checking after each submit."""
        async with asyncio.timeout(WAIT_S):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    async def ended(self, invocation_id: str, attempt: int | None = None) -> Any:
        """The End, Suspension or Error that ended the attempt (the latest one by default)."""
        number = attempt or self.attempts[invocation_id]

        def ends() -> list[Any]:
            return [m for m in self.messages(invocation_id, number) if isinstance(m, ENDS)]

        await self.until(lambda: bool(ends()))
        return ends()[-1]

    async def complete(self, invocation_id: str, *, max_attempts: int = 10) -> tuple[Any, int]:
        """Resume after each suspension until End or Error: (the ending message, attempts used)."""
        while True:
            end = await self.ended(invocation_id)
            if not isinstance(end, pm.SuspensionMessage) or self.attempts[invocation_id] >= max_attempts:
                return end, self.attempts[invocation_id]
            self.resume(invocation_id)


def output_of(messages: Sequence[Any]) -> Any:
    """The value of the OutputCommand among `messages`, decoded from JSON."""
    for m in messages:
        if isinstance(m, pm.OutputCommand):
            return json.loads(m.value.content) if m.WhichOneof("result") == "value" else m.failure
    raise AssertionError(f"no OutputCommand in {[type(m).__name__ for m in messages]}")
