"""POST /invoke with the request body kept open (bidirectional streaming, as over h2c): frames
arriving while the handler runs reach it; closing the request suspends a waiting handler; the
response ends only after the runtime closed its side."""

from __future__ import annotations

import asyncio

import pytest

from perdure.protocol import messages as pm
from perdure.protocol.codec import REQUESTED_ACK, encode_frame

from .apps import protocol_app
from .asgi import Exchange, frames, input_command, names, start_message


async def test_notifications_reach_the_running_handler_v6() -> None:
    exchange = Exchange(protocol_app, "/invoke/steps/run_then_sleep", version=6).begin()
    exchange.feed(start_message(), input_command(b'"bob"'))
    out = await exchange.frames(2)
    assert names(out) == ["RunCommand", "ProposeRunCompletion"] and out[1][1] == 0
    exchange.feed(pm.RunCompletion(completion_id=1, value=pm.Value(content=b'"ran bob"')))
    (sleep,) = await exchange.frames(1)
    assert names([sleep]) == ["SleepCommand"]
    assert await exchange.idle()  # waiting for the timer, not suspended
    exchange.feed(pm.SleepCompletion(completion_id=2, void=pm.Void()))
    out = await exchange.frames(2)
    assert names(out) == ["OutputCommand", "End"]
    assert out[0][0].value.content == b'"ran bob, slept"'
    assert exchange.status == 200 and exchange.headers["content-type"].endswith(".v6")
    # The response stays open until the runtime closes its side, then ends.
    assert await exchange.idle() and not exchange.ended
    exchange.close()
    await exchange.done()
    assert exchange.ended


async def test_v7_run_proposals_are_acked_not_echoed() -> None:
    exchange = Exchange(protocol_app, "/invoke/steps/run_then_sleep", version=7).begin()
    exchange.feed(start_message(), input_command(b'"ann"'))
    out = await exchange.frames(2)
    assert out[1][1] == REQUESTED_ACK
    exchange.feed(pm.ProposeRunCompletionAckMessage(completion_id=1))
    assert names(await exchange.frames(1)) == ["SleepCommand"]
    exchange.feed(pm.SleepCompletion(completion_id=2, void=pm.Void()))
    out = await exchange.frames(2)
    assert out[0][0].value.content == b'"ran ann, slept"'
    exchange.close()
    await exchange.done()


async def test_closing_the_request_suspends_a_waiting_handler() -> None:
    exchange = Exchange(protocol_app, "/invoke/steps/wait_awakeable", version=6).begin()
    exchange.feed(start_message(), input_command(b""))
    assert await exchange.idle(0.2)  # blocked on the awakeable: nothing to say yet
    exchange.close()  # e.g. the runtime's inactivity timeout
    (suspension,) = await exchange.frames(1)
    assert names([suspension]) == ["Suspension"]
    assert list(suspension[0].waiting_signals) == [1, 17]  # CANCEL and the awakeable
    await exchange.done()
    assert exchange.ended


async def test_an_awakeable_completed_mid_stream() -> None:
    exchange = Exchange(protocol_app, "/invoke/steps/wait_awakeable", version=6).begin()
    exchange.feed(start_message(), input_command(b""))
    assert await exchange.idle(0.05)
    exchange.feed(pm.SignalNotification(idx=17, value=pm.Value(content=b'"yes"')))
    out = await exchange.frames(2)
    assert names(out) == ["OutputCommand", "End"] and out[0][0].value.content == b'"yes"'
    exchange.close()
    await exchange.done()


async def test_frames_sent_with_the_journal_are_delivered() -> None:
    """Notifications in the same chunk as Start and the journal (after `known_entries`)."""
    exchange = Exchange(protocol_app, "/invoke/steps/wait_awakeable", version=6).begin()
    exchange.feed(
        start_message(), input_command(b""), pm.SignalNotification(idx=17, value=pm.Value(content=b'"now"'))
    )
    out = await exchange.frames(2)
    assert out[0][0].value.content == b'"now"'
    exchange.close()
    await exchange.done()


async def test_the_journal_may_arrive_in_pieces() -> None:
    exchange = Exchange(protocol_app, "/invoke/counter/add", version=6).begin()
    raw = frames(start_message(key="k", state={}), input_command(b"3"))
    for i in range(0, len(raw), 5):
        exchange.feed(raw=raw[i : i + 5])
    out = await exchange.frames(4)
    assert names(out)[-1] == "End" and out[2][0].value.content == b"3"
    exchange.close()
    await exchange.done()


async def test_a_command_from_the_runtime_mid_stream_is_a_protocol_violation() -> None:
    exchange = Exchange(protocol_app, "/invoke/steps/wait_awakeable", version=6).begin()
    exchange.feed(start_message(), input_command(b""))
    assert await exchange.idle(0.05)
    exchange.feed(pm.SetStateCommand(key=b"k"))
    (error,) = await exchange.frames(1)
    assert names([error]) == ["Error"] and error[0].code == pm.PROTOCOL_VIOLATION
    exchange.feed(pm.SetStateCommand(key=b"ignored"))  # drained, not answered
    assert await exchange.idle() and not exchange.ended
    exchange.close()
    await exchange.done()
    assert exchange.ended


async def test_a_disconnect_stops_the_handler_quietly() -> None:
    exchange = Exchange(protocol_app, "/invoke/steps/wait_awakeable", version=6).begin()
    exchange.feed(start_message(), input_command(b""))
    assert await exchange.idle(0.05)
    exchange.disconnect()
    await exchange.done()
    assert not exchange.ended  # nothing more is written to a closed connection
    await asyncio.sleep(0)
    assert not [t for t in asyncio.all_tasks() if (t.get_name() or "").startswith("perdure-inv_1test")]


@pytest.mark.parametrize(
    "body",
    [
        encode_frame(start_message()) + b"\x12\x34" + b"\0" * 6,  # an unknown message type
        frames(input_command(b"")),  # no StartMessage
        frames(start_message(), input_command(b""), pm.OutputCommand()),  # a command after the journal
    ],
)
async def test_a_violation_in_the_last_chunk_still_ends_the_response(body: bytes) -> None:
    """The whole request in one event (as an HTTP/1.1 server may deliver it)."""
    exchange = Exchange(protocol_app, "/invoke/steps/wait_awakeable", version=6).begin()
    exchange.feed(raw=body, more=False)
    (error,) = await exchange.frames(1)
    assert error[0].code == pm.PROTOCOL_VIOLATION
    await exchange.done()
    assert exchange.ended
