"""An attempt always reports how it ended, even when its handler diverges from the journal."""

from __future__ import annotations

from typing import Any

import perdure
from perdure import Context, TerminalError
from perdure.protocol import messages as pm
from perdure.protocol.vm import VM
from perdure.sdk.attempt import Attempt

svc = perdure.Service("svc")


@svc.handler()
async def fails_at_once(ctx: Context) -> None:
    raise TerminalError("no longer does what its journal records", 400)


async def test_a_terminal_failure_where_the_journal_records_more_is_a_journal_mismatch() -> None:
    # Found by the simulator: `python3 dev.py simulate --seeds 1 --seed 562 --duplicate-outputs`
    # (a cancellation observed at another await on replay). The mismatch was raised inside
    # `except TerminalError`, escaped the attempt, and the invocation heard nothing — it stayed
    # "running" with no attempt until the next restart.
    start = pm.StartMessage(id=b"\0" * 24, debug_id="inv_test", known_entries=3, partial_state=True)
    journal = [
        pm.InputCommand(value=pm.Value(content=b"")),
        pm.RunCommand(result_completion_id=1, name="step"),
        pm.RunCompletion(completion_id=1, value=pm.Value(content=b"1")),
    ]
    sent: list[list[Any]] = []
    handler = perdure.App([svc]).handler("svc", "fails_at_once")
    assert handler is not None
    attempt = Attempt(
        handler, VM(start, journal, handler="svc/fails_at_once"), send=sent.append, now_ms=lambda: 0
    )
    await attempt.execute()
    [[error]] = sent
    assert isinstance(error, pm.ErrorMessage) and error.code == pm.JOURNAL_MISMATCH
    assert "the journal has RunCommand(name='step')" in error.message


class Unusual(BaseException):
    """Neither an `Exception` nor a cancellation: what `sys.exit()` or a library's own signal raises."""


@svc.handler()
async def exits(ctx: Context) -> None:
    raise Unusual("not an Exception")


async def test_a_handler_raising_a_base_exception_fails_the_attempt_and_is_retried() -> None:
    # Such an exception used to escape the attempt, which then reported nothing: the
    # invocation stayed "running" with no attempt until the next restart.
    start = pm.StartMessage(id=b"\0" * 24, debug_id="inv_test", known_entries=1, partial_state=True)
    sent: list[list[Any]] = []
    handler = perdure.App([svc]).handler("svc", "exits")
    assert handler is not None
    attempt = Attempt(
        handler,
        VM(start, [pm.InputCommand(value=pm.Value(content=b""))], handler="svc/exits"),
        send=sent.append,
        now_ms=lambda: 0,
    )
    await attempt.execute()
    [[error]] = sent
    assert isinstance(error, pm.ErrorMessage) and error.code == 500
    assert error.message == "Unusual: not an Exception"
