"""The HTTP invoker: runs attempts of handlers served by remote deployments.

The remote counterpart of `InProcessInvoker`, with the same shape. Each attempt is one HTTP
exchange with the deployment pinned for its invocation: bidirectional over HTTP/2 when the
deployment serves `BIDI_STREAM` over HTTP/2, request/response otherwise (on the same HTTP/2
connection pool, or on `http1.Http1Client` for HTTP/1.1 deployments). Whatever goes wrong in
the transport reaches the engine as an `ErrorMessage`, so the engine's retry policy applies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from perdure.engine.actions import Notify, StartAttempt
from perdure.engine.commands import AttemptOutput
from perdure.protocol import messages as pm
from perdure.runtime.clock import Clock
from perdure.runtime.remote.attempt import Attempt
from perdure.runtime.remote.bidi import BidiAttempt
from perdure.runtime.remote.failures import BROKEN, TransportError, describe, unreachable
from perdure.runtime.remote.http1 import Http1Client
from perdure.runtime.remote.options import RemoteOptions, TimeoutsOf
from perdure.runtime.remote.pool import Pool
from perdure.runtime.remote.request import invocation
from perdure.runtime.remote.unary import UnaryAttempt
from perdure.storage.api import Deployment

log = logging.getLogger("perdure.remote")

#: An attempt with no frame either way for this long counts as blocked (see `all_blocked`).
QUIET_S = 0.1


class RemoteInvoker:
    """Runs attempts on remote deployments over HTTP; `submit` receives what they send.

    invoker = RemoteInvoker(engine.submit, SystemClock(), store.get_deployment)
    invoker.start(start_attempt)      # returns at once; the attempt runs in a task
    await invoker.stop()
    """

    def __init__(
        self,
        submit: Callable[[AttemptOutput], None],
        clock: Clock,
        deployment_of: Callable[[str], Deployment | None],
        *,
        options: RemoteOptions | None = None,
        timeouts_of: TimeoutsOf | None = None,
    ) -> None:
        self._submit = submit
        self._clock = clock
        self._deployment_of = deployment_of
        self._options = options or RemoteOptions()
        self._timeouts_of = timeouts_of
        self._pool = Pool(self._options)
        self._http1 = Http1Client(self._options)
        self._running: dict[str, Attempt] = {}
        self._tasks: dict[Attempt, asyncio.Task[None]] = {}
        self._outbox: dict[Attempt, list[Any]] = {}  # emitted this loop turn, submitted at its end
        self.started = 0
        self.submitted = 0  # AttemptOutput commands handed to the engine

    @property
    def active(self) -> int:
        """Attempts in flight."""
        return len(self._running)

    @property
    def all_blocked(self) -> bool:
        """True when no attempt has seen a frame either way for QUIET_S (none is computing)."""
        now = asyncio.get_running_loop().time()
        return all(now - attempt.last_frame >= QUIET_S for attempt in self._running.values())

    @property
    def tasks(self) -> int:
        """Attempt tasks not finished yet (an ended attempt still closes its exchange)."""
        return len(self._tasks)

    @property
    def connections(self) -> int:
        """HTTP/2 connections open now (bidirectional attempts)."""
        return self._pool.connections

    @property
    def connections_opened(self) -> int:
        """Connections made so far (HTTP/2 and HTTP/1.1)."""
        return self._pool.opened + self._http1.opened

    def start(self, action: StartAttempt) -> None:
        """Start an attempt (a running one of the same invocation is aborted first)."""
        self.abort(action.invocation_id)
        try:
            attempt = self._attempt(action)
        except TransportError as e:
            self._submit(AttemptOutput(action.invocation_id, action.attempt, [e.message()]))
            return
        self._running[action.invocation_id] = attempt
        self.started += 1
        task = asyncio.get_running_loop().create_task(
            self._run(attempt), name=f"attempt-{action.invocation_id}-{action.attempt}"
        )
        self._tasks[attempt] = task
        task.add_done_callback(lambda _: self._tasks.pop(attempt, None))

    def _attempt(self, action: StartAttempt) -> Attempt:
        deployment = self._deployment_of(action.deployment_id) if action.deployment_id else None
        if deployment is None:
            where = f"{action.service}/{action.handler}"
            raise TransportError(404, f"{where}: deployment {action.deployment_id} is not registered")
        try:
            target = invocation(action, deployment)
            if deployment.http_version == "2":
                bidi = deployment.protocol_mode == "BIDI_STREAM"
                return BidiAttempt(
                    action,
                    target,
                    self._emit,
                    pool=self._pool,
                    clock=self._clock,
                    options=self._options,
                    timeouts_ms=self._timeouts(action) if bidi else (0, self._response_timeout_ms),
                    request_response=not bidi,
                )
            return UnaryAttempt(
                action, target, self._emit, client=self._http1, clock=self._clock, options=self._options
            )
        except (ValueError, OSError) as e:  # a malformed URI, an unreadable ca_file
            raise unreachable(deployment.uri, e) from e

    @property
    def _response_timeout_ms(self) -> int:
        return int(self._options.response_timeout * 1000)

    def _timeouts(self, action: StartAttempt) -> tuple[int, int]:
        custom = self._timeouts_of(action.service, action.handler) if self._timeouts_of else None
        if custom is not None:
            return custom
        return int(self._options.inactivity_timeout * 1000), int(self._options.abort_timeout * 1000)

    async def _run(self, attempt: Attempt) -> None:
        ended = False
        try:
            await attempt.run()
            ended = True
        except TransportError as e:
            log.info("attempt %s #%d: %s", attempt.invocation_id, attempt.action.attempt, e.text)
            attempt.emit([e.message()])
        except Exception as e:  # a bug in the transport: the attempt fails and is retried
            log.exception("attempt %s #%d crashed", attempt.invocation_id, attempt.action.attempt)
            text = f"deployment {attempt.target.uri}: transport failure: {describe(e)}"
            attempt.emit([pm.ErrorMessage(code=BROKEN, message=text)])
        finally:
            self._finished(attempt)
            try:
                await attempt.close(graceful=ended)
            except Exception:  # the attempt is over either way; keep the loop's log clean
                log.exception("closing attempt %s #%d failed", attempt.invocation_id, attempt.action.attempt)

    def _emit(self, attempt: Attempt, messages: list[Any]) -> None:
        """Queue an attempt's messages; what one loop turn emits reaches the engine as one command.

        A deployment's frames arrive one DATA frame at a time (a `ctx.run` is a RunCommand and
        a ProposeRunCompletion, often in one socket read): each frame as its own AttemptOutput
        cost the partition a command apply per frame. Order within an attempt is kept; the
        engine still journals every message before it answers, so durability is unchanged."""
        if self._running.get(attempt.invocation_id) is not attempt:
            return
        queued = self._outbox.get(attempt)
        if queued is not None:
            queued.extend(messages)
            return
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._send_outbox)
        self._outbox[attempt] = list(messages)

    def _send_outbox(self) -> None:
        outbox, self._outbox = self._outbox, {}
        for attempt, messages in outbox.items():
            self.submitted += 1
            self._submit(AttemptOutput(attempt.invocation_id, attempt.action.attempt, messages))

    def _finished(self, attempt: Attempt) -> None:
        if self._running.get(attempt.invocation_id) is attempt:
            del self._running[attempt.invocation_id]

    def notify(self, action: Notify) -> None:
        """Send notifications to a bidirectional attempt (request/response ones ignore them)."""
        attempt = self._running.get(action.invocation_id)
        if attempt is not None and attempt.action.attempt == action.attempt:
            attempt.notify(action.messages)

    def running(self) -> list[str]:
        """Ids of the invocations with an attempt streaming now."""
        return list(self._running)

    def busy(self, invocation_id: str) -> bool:
        """Whether the invocation's attempt exchanged frames lately (it may be computing)."""
        attempt = self._running.get(invocation_id)
        return attempt is not None and asyncio.get_running_loop().time() - attempt.last_frame < QUIET_S

    def abort(self, invocation_id: str) -> None:
        """Drop the running attempt, if any: its stream is reset and it submits nothing more."""
        attempt = self._running.pop(invocation_id, None)
        if attempt is None:
            return
        self._outbox.pop(attempt, None)  # it submits nothing more
        attempt.cancel()
        task = self._tasks.get(attempt)
        if task is not None:
            task.cancel()

    async def stop(self) -> None:
        """Abort every attempt and close connections (attempts resume from their journals)."""
        for invocation_id in list(self._running):
            self.abort(invocation_id)
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._pool.close()
        await self._http1.close()
