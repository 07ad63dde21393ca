"""The HTTP/2 client's edge cases against a scripted server: what is on the wire, GOAWAY, resets,
dropped connections, small windows, the peer's stream limit and keep-alive PINGs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import h2.connection
import h2.settings
import pytest

from perdure.engine.actions import Notify
from perdure.protocol import messages as pm
from perdure.protocol.codec import REQUESTED_ACK
from perdure.runtime.remote import RemoteInvoker, RemoteOptions

from .driver import Driver, deployment, output_of
from .h2server import Handler, ScriptedServer, ServerStream

Serve = Callable[..., Any]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    """`driver, server = await serve(handler, version=7, settings={...}, **options)`."""
    made: list[tuple[Driver, ScriptedServer]] = []

    async def start(
        handler: Handler,
        *,
        version: int = 7,
        settings: dict[Any, int] | None = None,
        connection_window: int = 65_535,
        **options: float,
    ) -> tuple[Driver, ScriptedServer]:
        server = ScriptedServer(handler, settings, connection_window)
        url = await server.start()
        driver = Driver(
            deployment(url, bidi=True, http="2", version=version),
            options=RemoteOptions(**options),  # type: ignore[arg-type]
        )
        made.append((driver, server))
        return driver, server

    yield start
    for driver, server in made:
        await driver.invoker.stop()
        await server.stop()


async def opening(stream: ServerStream) -> list[Any]:
    """Start and the journal it announces."""
    start = (await stream.frames(1))[0]
    assert isinstance(start, pm.StartMessage)
    return [start, *await stream.frames(start.known_entries)]


async def finish(stream: ServerStream, value: Any) -> None:
    output = pm.OutputCommand(value=pm.Value(content=json.dumps(value).encode()))
    await stream.send(output, pm.EndMessage(), end=True)


@pytest.mark.parametrize(
    ("version", "flags", "expected"), [(6, 0, "RunCompletion"), (7, REQUESTED_ACK, "Ack")]
)
async def test_run_result_or_ack_on_the_wire(serve: Serve, version: int, flags: int, expected: str) -> None:
    seen: list[Any] = []

    async def handler(stream: ServerStream) -> None:
        await opening(stream)
        stream.respond()
        await stream.send(pm.RunCommand(result_completion_id=1, name="r"))
        await stream.send(pm.ProposeRunCompletionMessage(result_completion_id=1, value=b'"v"'), flags=flags)
        seen.append((await stream.frames(1))[0])
        await finish(stream, "ok")
        seen.append(await stream.frame())  # the runtime closes its request body after End

    driver, server = await serve(handler, version=version)
    inv = driver.call("Svc", "run", "x")
    assert isinstance(await driver.ended(inv), pm.EndMessage)
    await asyncio.sleep(0.05)
    reply, after_end = seen
    if expected == "Ack":
        assert reply == pm.ProposeRunCompletionAckMessage(completion_id=1)
    else:
        assert reply == pm.RunCompletion(completion_id=1, value=pm.Value(content=b'"v"'))
    assert after_end is None
    headers = server.requests[0].headers
    assert headers[":path"] == "/invoke/Svc/run"
    assert headers["content-type"] == headers["accept"] == f"application/vnd.restate.invocation.v{version}"
    assert headers["x-restate-invocation-id"] == inv


async def test_keyed_target_headers(serve: Serve) -> None:
    async def handler(stream: ServerStream) -> None:
        await opening(stream)
        stream.respond()
        await finish(stream, "ok")

    driver, server = await serve(handler)
    driver.deployment.additional_headers["x-team"] = "payments"
    inv = driver.call("Cart", "add", 1, key="user/1 ü")
    assert isinstance(await driver.ended(inv), pm.EndMessage)
    headers = server.requests[0].headers
    assert headers["x-restate-service-key"] == "user%2F1%20%C3%BC"
    assert headers["x-team"] == "payments"


async def test_stream_refused_by_goaway_is_sent_again_on_a_new_connection(serve: Serve) -> None:
    async def handler(stream: ServerStream) -> None:
        if len(stream.conn.server.connections) == 1:
            stream.conn.goaway(last_stream_id=0)  # "I did not process stream 1"
            return
        await opening(stream)
        stream.respond()
        await finish(stream, "second connection")

    driver, _ = await serve(handler)
    inv = driver.call("Svc", "h", "x")
    assert isinstance(await driver.ended(inv), pm.EndMessage)
    assert output_of(driver.messages(inv)) == "second connection"
    assert driver.invoker.connections_opened == 2
    await asyncio.sleep(0.05)
    assert driver.invoker.connections == 1  # the refused one was dropped


async def test_goaway_lets_streams_below_last_id_finish_and_opens_no_new_ones(serve: Serve) -> None:
    proceed = asyncio.Event()

    async def handler(stream: ServerStream) -> None:
        await opening(stream)
        stream.respond()
        if stream.id == 1 and len(stream.conn.server.connections) == 1:
            stream.conn.goaway(last_stream_id=1)
            # h2 closes its side on GOAWAY; a real server keeps serving the streams it accepted
            stream.conn.h2.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN
            await proceed.wait()
        await finish(stream, stream.id)

    driver, _ = await serve(handler)
    first = driver.call("Svc", "h", "a")
    async with asyncio.timeout(5):
        while not _draining(driver):  # noqa: ASYNC110 - the pool's state has no event to wait on
            await asyncio.sleep(0.01)
    second = driver.call("Svc", "h", "b")
    assert isinstance(await driver.ended(second), pm.EndMessage)
    assert driver.invoker.connections_opened == 2
    proceed.set()
    assert isinstance(await driver.ended(first), pm.EndMessage)
    assert output_of(driver.messages(first)) == 1
    await asyncio.sleep(0.05)
    assert driver.invoker.connections == 1  # the drained connection closed once its stream ended


def _draining(driver: Driver) -> bool:
    pool = driver.invoker._pool
    return any(c.draining for conns in pool._connections.values() for c in conns)


async def test_reset_stream_fails_the_attempt(serve: Serve) -> None:
    async def handler(stream: ServerStream) -> None:
        await opening(stream)
        stream.respond()
        await stream.send(pm.RunCommand(result_completion_id=1, name="r"))
        await asyncio.sleep(0.05)
        stream.reset(2)  # INTERNAL_ERROR

    driver, _ = await serve(handler)
    inv = driver.call("Svc", "h", "x")
    end = await driver.ended(inv)
    assert isinstance(end, pm.ErrorMessage)
    assert end.code == 502
    assert "reset by the peer (INTERNAL_ERROR)" in end.message
    assert any(isinstance(m, pm.RunCommand) for m in driver.messages(inv))


async def test_lost_connection_fails_every_stream_on_it(serve: Serve) -> None:
    arrived = asyncio.Event()

    async def handler(stream: ServerStream) -> None:
        await opening(stream)
        stream.respond()
        if len(stream.conn.server.requests) == 2:
            arrived.set()
        await arrived.wait()
        stream.conn.drop()

    driver, _ = await serve(handler)
    invs = [driver.call("Svc", "h", "x"), driver.call("Svc", "h", "y")]
    for inv in invs:
        end = await driver.ended(inv)
        assert isinstance(end, pm.ErrorMessage)
        assert end.code == 502
        assert "connection lost" in end.message
    assert driver.invoker.connections == 0


async def test_small_windows_and_the_peers_stream_limit(serve: Serve) -> None:
    """A 1 KiB window and one stream per connection: a 200 kB journal goes through in pieces,
    and a second concurrent attempt gets a connection of its own."""
    got: list[int] = []

    async def handler(stream: ServerStream) -> None:
        _, input_command = await opening(stream)
        stream.respond()
        got.append(len(input_command.value.content))
        await asyncio.sleep(0.1)
        await finish(stream, len(input_command.value.content))

    settings = {
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1024,
        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1,
    }
    driver, _ = await serve(handler, settings=settings)
    invs = [driver.call("Svc", "h", "x" * 200_000), driver.call("Svc", "h", "y" * 100_000)]
    for inv in invs:
        assert isinstance(await driver.ended(inv), pm.EndMessage)
    assert sorted(got) == [100_002, 200_002]
    assert driver.invoker.connections_opened == 2


async def test_keepalive_pings_a_silent_connection(serve: Serve) -> None:
    async def handler(stream: ServerStream) -> None:
        await opening(stream)
        stream.respond()
        await asyncio.sleep(0.6)
        await finish(stream, "still here")

    driver, server = await serve(handler, keepalive_interval=0.15, keepalive_timeout=0.5)
    inv = driver.call("Svc", "h", "x")
    assert isinstance(await driver.ended(inv), pm.EndMessage)
    assert server.connections[0].pings >= 1


async def test_unanswered_ping_closes_the_connection(serve: Serve) -> None:
    async def handler(stream: ServerStream) -> None:
        await opening(stream)
        stream.respond()
        stream.conn.frozen.set()
        await asyncio.sleep(10)

    driver, _ = await serve(handler, keepalive_interval=0.1, keepalive_timeout=0.2)
    inv = driver.call("Svc", "h", "x")
    end = await driver.ended(inv)
    assert isinstance(end, pm.ErrorMessage)
    assert end.code == 502
    assert "no answer to PING within 0.2 s" in end.message


async def test_notifications_before_the_stream_opens_follow_the_journal(serve: Serve) -> None:
    """A result journaled while the connection is still being made is sent after the journal."""
    got: list[Any] = []

    async def handler(stream: ServerStream) -> None:
        got.extend(await opening(stream))
        got.extend(await stream.frames(1))
        stream.respond()
        await finish(stream, "ok")

    driver, _ = await serve(handler)
    inv = driver.call("Svc", "h", "x")
    cancel = pm.SignalNotification(idx=pm.CANCEL_SIGNAL, void=pm.Void())
    driver.invoker.notify(Notify(inv, 1, [cancel]))  # before the connection exists
    assert isinstance(await driver.ended(inv), pm.EndMessage)
    assert [type(m) for m in got] == [pm.StartMessage, pm.InputCommand, pm.SignalNotification]


async def test_per_handler_timeouts(serve: Serve) -> None:
    """`timeouts_of` overrides the inactivity timeout: the request body closes after 0.1 s."""
    closed_after: list[float] = []

    async def handler(stream: ServerStream) -> None:
        await opening(stream)
        stream.respond()
        began = asyncio.get_running_loop().time()
        assert await stream.frame() is None  # the request body ended
        closed_after.append(asyncio.get_running_loop().time() - began)
        await stream.send(pm.SuspensionMessage(waiting_signals=[17]), end=True)

    driver, _ = await serve(handler)
    invoker = RemoteInvoker(
        driver.submit, driver.clock, lambda _: driver.deployment, timeouts_of=lambda s, h: (100, 60_000)
    )
    driver.invoker = invoker
    try:
        inv = driver.call("Svc", "h", "x")
        assert isinstance(await driver.ended(inv), pm.SuspensionMessage)
    finally:
        await invoker.stop()
    assert 0.05 < closed_after[0] < 1.0


async def test_huge_windows_are_bounded_by_the_transport_buffer(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With windows of 1 GiB a 24 MB journal is paced by the socket, not buffered whole: no write
    hands the socket much more than the 256 KiB bound."""
    writes: list[int] = []
    data_to_send = h2.connection.H2Connection.data_to_send

    def recorded(self: h2.connection.H2Connection, amount: int | None = None) -> bytes:
        data = data_to_send(self, amount)
        writes.append(len(data))
        return data

    monkeypatch.setattr(h2.connection.H2Connection, "data_to_send", recorded)

    async def handler(stream: ServerStream) -> None:
        _, input_command = await opening(stream)
        stream.respond()
        await finish(stream, len(input_command.value.content))

    big = {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**30}
    driver, _ = await serve(handler, settings=big, connection_window=2**30)
    inv = driver.call("Svc", "h", "z" * 24_000_000)
    assert isinstance(await driver.ended(inv), pm.EndMessage)
    assert output_of(driver.messages(inv)) == 24_000_002
    assert sum(writes) > 24_000_000 and max(writes) < 256 * 1024 + 20_000  # + at most one frame
