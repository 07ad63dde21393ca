"""POST /invoke in request/response mode (the whole request body first, as over HTTP/1.1):
results, suspensions, replay, version negotiation, errors and protocol violations."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from perdure.protocol import messages as pm
from perdure.protocol.codec import REQUESTED_ACK, decode_frames, encode_frame

from .apps import protocol_app
from .asgi import V, frames, input_command, names, start_message


async def invoke(
    path: str, body: bytes, *, version: int = 6, content_type: str | None = None, method: str = "POST"
) -> httpx.Response:
    transport = httpx.ASGITransport(app=protocol_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://deployment") as client:
        headers = {"content-type": content_type or V.format(version)}
        return await client.request(method, path, content=body, headers=headers, timeout=5)


def decoded(response: httpx.Response) -> list[tuple[Any, int]]:
    assert response.status_code == 200, response.text
    return decode_frames(response.content)


async def test_a_handler_runs_to_its_output() -> None:
    body = frames(start_message(key="a", state={b"total": b"5"}), input_command(b"7"))
    response = await invoke("/invoke/counter/add", body)
    assert response.headers["content-type"] == V.format(6)
    assert response.headers["x-restate-server"].startswith("perdure/")
    out = decoded(response)
    assert names(out) == ["GetEagerStateCommand", "SetStateCommand", "OutputCommand", "End"]
    assert out[1][0].value.content == b"12"
    assert out[2][0].value.content == b"12"


async def test_any_prefix_before_invoke() -> None:
    body = frames(start_message(key="a", state={}), input_command(b"1"))
    assert names(decoded(await invoke("/deployments/x/invoke/counter/add", body)))[-1] == "End"


@pytest.mark.parametrize("version", [5, 6])
async def test_a_run_suspends_waiting_for_its_result_v5_v6(version: int) -> None:
    body = frames(start_message(), input_command(b'"bob"'))
    out = decoded(await invoke("/invoke/steps/run_then_sleep", body, version=version))
    assert names(out) == ["RunCommand", "ProposeRunCompletion", "Suspension"]
    assert out[1][1] == 0  # no ack requested before V7
    assert out[1][0].value == b'"ran bob"'
    suspension = out[2][0]
    assert list(suspension.waiting_completions) == [1] and list(suspension.waiting_signals) == [1]


async def test_v7_asks_for_a_run_ack_and_suspends_on_a_future_tree() -> None:
    body = frames(start_message(), input_command(b'"bob"'))
    response = await invoke("/invoke/steps/run_then_sleep", body, version=7)
    assert response.headers["content-type"] == V.format(7)
    out = decoded(response)
    assert names(out) == ["RunCommand", "ProposeRunCompletion", "Suspension"]
    assert out[1][1] == REQUESTED_ACK
    tree = out[2][0].awaiting_on
    assert list(tree.waiting_completions) == [1] and list(tree.waiting_signals) == [1]
    assert not out[2][0].waiting_completions  # the flat V6 fields are unused


async def test_a_longer_journal_replays_and_moves_on() -> None:
    journal = [
        input_command(b'"bob"'),
        pm.RunCommand(result_completion_id=1, name="side"),
        pm.RunCompletion(completion_id=1, value=pm.Value(content=b'"ran bob"')),
    ]
    out = decoded(
        await invoke("/invoke/steps/run_then_sleep", frames(start_message(known_entries=3), *journal))
    )
    assert names(out) == ["SleepCommand", "Suspension"]  # the run is not repeated
    sleep = out[0][0]
    journal += [sleep, pm.SleepCompletion(completion_id=2, void=pm.Void())]
    out = decoded(
        await invoke("/invoke/steps/run_then_sleep", frames(start_message(known_entries=5), *journal))
    )
    assert names(out) == ["OutputCommand", "End"]
    assert out[0][0].value.content == b'"ran bob, slept"'


async def test_v5_has_no_random_seed_and_still_gets_a_stable_one() -> None:
    body = frames(start_message(), input_command(b""))
    first = decoded(await invoke("/invoke/steps/lucky", body, version=5))
    again = decoded(await invoke("/invoke/steps/lucky", body, version=5))
    assert names(first) == ["OutputCommand", "End"]
    assert first[0][0].value.content == again[0][0].value.content


async def test_terminal_errors_are_outputs_other_errors_fail_the_attempt() -> None:
    out = decoded(await invoke("/invoke/steps/refuse", frames(start_message(), input_command(b'"no"'))))
    assert names(out) == ["OutputCommand", "End"]
    assert (out[0][0].failure.code, out[0][0].failure.message) == (422, "no")
    out = decoded(await invoke("/invoke/steps/crash", frames(start_message(), input_command(b""))))
    assert names(out) == ["Error"]
    assert out[0][0].code == 500 and "boom" in out[0][0].message


async def test_a_diverging_journal_is_a_journal_mismatch() -> None:
    journal = [input_command(b'"bob"'), pm.SleepCommand(wake_up_time=1, result_completion_id=1)]
    out = decoded(
        await invoke("/invoke/steps/run_then_sleep", frames(start_message(known_entries=2), *journal))
    )
    assert names(out) == ["Error"] and out[0][0].code == pm.JOURNAL_MISMATCH


@pytest.mark.parametrize("path", ["/invoke/nowhere/add", "/invoke/counter/nothing"])
async def test_unknown_targets_get_404(path: str) -> None:
    response = await invoke(path, frames(start_message(), input_command(b"1")))
    assert response.status_code == 404
    assert "no handler" in response.text


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/vnd.restate.invocation.v4",
        "application/vnd.restate.invocation.v8",
        "",
    ],
)
async def test_unsupported_protocol_versions_get_415(content_type: str) -> None:
    response = await invoke("/invoke/counter/add", b"", content_type=content_type or "text/plain")
    assert response.status_code == 415
    assert "invocation.v5" in response.text and "v7" in response.text


async def test_invoking_needs_post() -> None:
    assert (await invoke("/invoke/counter/get", b"", method="GET")).status_code == 405


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (frames(input_command(b"1")), "expected a StartMessage"),
        (frames(start_message(known_entries=3), input_command(b"1")), "after 1 of 3 journal entries"),
        (frames(start_message(), input_command(b"1"))[:-2], "inside a frame"),
        (b"", "before a StartMessage"),
        (frames(start_message(), input_command(b"1"), pm.OutputCommand()), "expected a notification"),
        (frames(start_message(known_entries=1), pm.SleepCommand()), "must start with an InputCommand"),
        (encode_frame(start_message()) + b"\x12\x34" + b"\0" * 6, "unknown message type"),
    ],
)
async def test_protocol_violations_end_the_attempt_with_571(body: bytes, complaint: str) -> None:
    out = decoded(await invoke("/invoke/steps/lucky", body))
    assert names(out) == ["Error"]
    assert out[0][0].code == pm.PROTOCOL_VIOLATION
    assert complaint in out[0][0].message
