"""Hypothesis against the protocol: random frames and mutations of real official-SDK traffic.

Whatever arrives, the frame decoder answers with messages or a `ProtocolError` (code 571); the
engine applies any messages an attempt sends without raising and without touching another
invocation; the SDK replays any journal to an End, a Suspension or an Error; perdure's
deployment endpoint answers any request body without crashing.

CI runs 200 inputs per test, the same every run; `PERDURE_FUZZ_EXAMPLES=5000` runs more, new
ones each run.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perdure.engine.commands import AttemptOutput, Invoke
from perdure.engine.registry import HandlerInfo, Registry
from perdure.engine.state_machine import StateMachine
from perdure.protocol import ids
from perdure.protocol import messages as pm
from perdure.protocol.codec import HEADER, FrameDecoder, ProtocolError, decode_frames
from perdure.protocol.vm import VM
from perdure.sdk.attempt import Attempt
from perdure.storage.api import Status
from perdure.storage.memory import Store

from .traffic import Exchanged, recorded

FUZZ = settings(
    max_examples=int(os.environ.get("PERDURE_FUZZ_EXAMPLES", "200")),
    deadline=None,
    derandomize="PERDURE_FUZZ_EXAMPLES" not in os.environ,  # CI: the same inputs every run
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def traffic() -> list[Exchanged]:
    return recorded()


def _bodies(traffic: list[Exchanged]) -> list[bytes]:
    return [b for e in traffic for b in (e.request, e.response)]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A recorded body with bytes flipped, cut, inserted, or a frame header's length changed."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "length"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[at : at + draw(st.integers(1, 16))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif len(data) >= HEADER.size:
            data[4:8] = draw(st.integers(0, 2**32 - 1)).to_bytes(4, "big")
    return bytes(data)


def _decode(data: bytes) -> list[Any] | None:
    try:
        return [m for m, _ in decode_frames(data)]
    except ProtocolError:
        return None


# ---- the frame decoder


@FUZZ
@given(data=st.binary(max_size=600), chunk=st.integers(1, 64))
def test_random_bytes_decode_to_messages_or_a_protocol_error(data: bytes, chunk: int) -> None:
    decoder = FrameDecoder()
    try:
        for i in range(0, len(data), chunk):
            list(decoder.feed(data[i : i + chunk]))
    except ProtocolError:
        pass


def test_mutated_traffic_decodes_to_messages_or_a_protocol_error(traffic: list[Exchanged]) -> None:
    @FUZZ
    @given(data=mutated(_bodies(traffic)))
    def check(data: bytes) -> None:
        _decode(data)  # anything else than ProtocolError fails the test

    check()


def test_a_corrupt_payload_is_a_protocol_error() -> None:
    # Found by this fuzzer: protobuf's DecodeError escaped the decoder, and perdure's endpoint,
    # which handles ProtocolError, failed the whole request instead of answering 571.
    with pytest.raises(ProtocolError, match="InputCommand"):
        decode_frames(HEADER.pack(pm.TYPE_OF[pm.InputCommand], 0, 3) + b"\xff\xff\xff")


# ---- the engine


def _engine() -> tuple[Store, StateMachine]:
    registry = Registry()
    registry.add("Journey", HandlerInfo("travel", keyed=True, exclusive=True))
    registry.add("Greeter", HandlerInfo("greet", keyed=False, exclusive=False))
    return Store(), StateMachine(registry, lambda: 1_000)


def _apply(store: Store, machine: StateMachine, command: Any) -> list[Any]:
    txn = store.begin()
    actions = machine.apply(txn, command)
    asyncio.run(store.commit(txn))  # type: ignore[arg-type]
    return actions


def test_the_engine_takes_any_attempt_output_and_no_other_invocation_notices(
    traffic: list[Exchanged],
) -> None:
    real = [m for e in traffic for body in (e.request, e.response) for m in _decode(body) or []]
    messages = st.one_of(
        st.lists(st.sampled_from(real), max_size=8),
        mutated(_bodies(traffic)).map(lambda data: _decode(data) or []),
    )

    @FUZZ
    @given(batches=st.lists(messages, min_size=1, max_size=3))
    def check(batches: list[list[Any]]) -> None:
        store, machine = _engine()
        target, bystander = ids.random_id("Journey", "a"), ids.random_id("Greeter", None)
        _apply(store, machine, Invoke(target, "Journey", "travel", "a", b"{}"))
        _apply(store, machine, Invoke(bystander, "Greeter", "greet", None, b'"x"'))
        reader = store.reader()
        before = (reader.get_invocation(bystander), reader.read_journal(bystander))
        for batch in batches:
            inv = reader.get_invocation(target)
            assert inv is not None
            _apply(store, machine, AttemptOutput(target, inv.attempt, batch))
        assert (reader.get_invocation(bystander), reader.read_journal(bystander)) == before
        inv = reader.get_invocation(target)
        assert inv is not None and inv.status in set(Status)

    check()


# ---- the SDK's replay


def _journal_of(request: bytes) -> tuple[Any, list[Any]] | None:
    decoded = _decode(request)
    if not decoded or not isinstance(decoded[0], pm.StartMessage):
        return None
    return decoded[0], decoded[1:]


def test_any_journal_replays_to_an_end_a_suspension_or_an_error(traffic: list[Exchanged]) -> None:
    from interop.perdure_services import app  # perdure's twins of the recorded handlers

    journals = [(e.target, j) for e in traffic if (j := _journal_of(e.request)) is not None]

    @st.composite
    def journal(draw: st.DrawFn) -> tuple[str, Any, list[Any]]:
        target, (start, entries) = draw(st.sampled_from(journals))
        entries = list(entries)
        for _ in range(draw(st.integers(0, 3))):
            if not entries:
                break
            at = draw(st.integers(0, len(entries) - 1))
            kind = draw(st.sampled_from(["drop", "repeat", "swap", "foreign"]))
            if kind == "drop":
                del entries[at]
            elif kind == "repeat":
                entries.insert(at, entries[at])
            elif kind == "swap":
                other = draw(st.integers(0, len(entries) - 1))
                entries[at], entries[other] = entries[other], entries[at]
            else:
                _, (_, others) = draw(st.sampled_from(journals))
                entries.insert(at, draw(st.sampled_from(others)))
        return target, start, entries

    @FUZZ
    @given(case=journal())
    def check(case: tuple[str, Any, list[Any]]) -> None:
        target, start, entries = case
        service, name = target.split("/")
        handler = app.handler(service, name)
        assert handler is not None
        try:
            vm = VM(start, entries, handler=target)
        except ProtocolError:
            return  # the invoker reports "cannot replay the journal" (571)
        sent: list[list[Any]] = []

        async def run() -> None:
            attempt = Attempt(
                handler, vm, send=sent.append, now_ms=lambda: 0, on_blocked=lambda a, _: a.suspend()
            )
            await attempt.execute()

        asyncio.run(run())
        last = [m for batch in sent for m in batch][-1:]
        assert last and isinstance(last[0], pm.EndMessage | pm.SuspensionMessage | pm.ErrorMessage)

    check()


# ---- perdure's deployment endpoint


def test_the_endpoint_answers_any_request_body(traffic: list[Exchanged]) -> None:
    from endpoint.asgi import Exchange
    from interop.perdure_services import app

    @FUZZ
    @given(
        body=mutated([e.request for e in traffic]),
        target=st.sampled_from(sorted({e.target for e in traffic})),
    )
    def check(body: bytes, target: str) -> None:
        async def run() -> Exchange:
            exchange = Exchange(app, f"/invoke/{target}", version=5, http_version="1.1").begin()
            exchange.feed(raw=body, more=False)
            await exchange.done(within=10)
            return exchange

        exchange = asyncio.run(run())
        assert exchange.status is not None and exchange.status < 500
        if exchange.status == 200:
            answered = [m for m, _ in decode_frames(exchange.body)]
            assert isinstance(answered[-1], pm.EndMessage | pm.SuspensionMessage | pm.ErrorMessage)

    check()


def test_recorded_traffic_is_real(traffic: list[Exchanged]) -> None:
    ends = [e for e in traffic if any(isinstance(m, pm.EndMessage) for m in _decode(e.response) or [])]
    assert {e.target for e in ends} >= {"Journey/travel", "Counter/add", "Greeter/greet"}
