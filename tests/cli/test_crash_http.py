"""kill -9 of `perdure dev` under HTTP load, then a restart: every acknowledged request completes once.

The load: REQUESTS requests at CONCURRENCY, alternating calls (200 + the handler's output) and
sends (202 + invocation id), each with its own idempotency key, over KEYS object keys of
`crash_app.py`'s counter. Partway through, the server gets SIGKILL. Then `perdure dev` restarts on
the same SQLite file, and the client does what a client of a durable service does: it repeats
every request it has no answer for, with the same idempotency key, and attaches to the sends.
Finally, with the server stopped by SIGTERM, the database and the side-effect log must show:

- every request, and in particular every one acknowledged before the kill, has exactly one
  invocation (its idempotency key's), completed, whose output is the answer the client got;
- the token its journal recorded for the `ctx.run` step is in the log exactly once (other log lines
  of the same request are executions whose result the kill lost: at-least-once, never recorded);
- each key's state counted each of its requests exactly once (`count` and the `seen` list).

Reproduce a run with PERDURE_CRASH_SEED=<seed printed by the test>.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from perdure.protocol import ids
from perdure.storage import open_store
from perdure.storage.api import Status

from .procs import DevServer, Server

APP = str(Path(__file__).with_name("crash_app.py")) + ":app"
REQUESTS = 2_000
CONCURRENCY = 32
KEYS = 40
KILL_AFTER_ACKS = (300, 1_200)  # the kill lands after a random number of acknowledgements
PHASE_TIMEOUT_S = 60.0


def key_of(i: int) -> str:
    return f"k{i % KEYS}"


def rid_of(i: int) -> str:
    return f"r{i:05d}"


def is_send(i: int) -> bool:
    return i % 2 == 1


@dataclass
class Load:
    """What the client saw: answers per request index; what was in flight when the server died."""

    answers: dict[int, dict[str, object]] = field(default_factory=dict)  # i -> body (200) or 202 body
    acked_before_kill: set[int] = field(default_factory=set)
    in_flight_at_kill: int = 0
    errors: Counter[str] = field(default_factory=Counter)


async def request(client: httpx.AsyncClient, base: str, i: int) -> httpx.Response:
    path = f"{base}/counter/{key_of(i)}/add" + ("/send" if is_send(i) else "")
    return await client.post(path, json=rid_of(i), headers={"idempotency-key": rid_of(i)})


def check_answer(i: int, response: httpx.Response) -> dict[str, object]:
    expected = 202 if is_send(i) else 200
    assert response.status_code == expected, (i, response.status_code, response.text)
    body: dict[str, object] = response.json()
    if is_send(i):
        assert body["invocationId"] == ids.idempotent_id("counter", "add", key_of(i), rid_of(i))
    else:
        assert body["rid"] == rid_of(i)
    return body


async def load_until_killed(server: Server, load: Load, kill_after: int, indexes: list[int]) -> None:
    """Send `indexes` CONCURRENCY at a time; SIGKILL the server after `kill_after` answers."""
    queue = list(reversed(indexes))
    killed = asyncio.Event()
    in_flight = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal in_flight
        while queue and not killed.is_set():
            i = queue.pop()
            in_flight += 1
            try:
                response = await request(client, server.ingress, i)
            except httpx.TransportError as e:  # the server died under this request
                load.errors[type(e).__name__] += 1
                continue
            finally:
                in_flight -= 1
            # An answer read after the kill still counts: the server wrote it before it died.
            load.answers[i] = check_answer(i, response)
            load.acked_before_kill.add(i)
            if len(load.answers) >= kill_after and not killed.is_set():
                server.kill()  # SIGKILL by pid, reaped
                load.in_flight_at_kill = in_flight
                killed.set()

    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:
        await asyncio.wait_for(asyncio.gather(*(worker(client) for _ in range(CONCURRENCY))), PHASE_TIMEOUT_S)
    assert killed.is_set(), "the load finished before the kill point"


async def finish(server: Server, load: Load) -> None:
    """Repeat every unanswered request (same idempotency key), then attach to every send."""
    pending = [i for i in range(REQUESTS) if i not in load.answers]
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits, timeout=20) as client:

        async def repeat(i: int) -> None:
            for tries in range(3):  # a kept-alive connection the server closed meanwhile: send again
                try:
                    response = await request(client, server.ingress, i)
                    break
                except httpx.TransportError as e:
                    load.errors[f"after restart: {type(e).__name__}"] += 1
                    if tries == 2:
                        raise
            load.answers[i] = check_answer(i, response)

        async def attach(i: int) -> None:
            invocation_id = load.answers[i]["invocationId"]
            response = await client.get(f"{server.ingress}/restate/invocation/{invocation_id}/attach")
            assert response.status_code == 200, (i, response.text)
            assert response.json()["rid"] == rid_of(i)

        async def bounded(jobs: list[int], fn: object) -> None:
            semaphore = asyncio.Semaphore(CONCURRENCY)

            async def one(i: int) -> None:
                async with semaphore:
                    await fn(i)  # type: ignore[operator]

            await asyncio.wait_for(asyncio.gather(*(one(i) for i in jobs)), PHASE_TIMEOUT_S)

        await bounded(pending, repeat)
        await bounded([i for i in range(REQUESTS) if is_send(i)], attach)


def read_log(path: Path) -> dict[str, list[str]]:
    tokens: dict[str, list[str]] = defaultdict(list)
    for line in path.read_text().splitlines():
        rid, token = line.split()
        tokens[rid].append(token)
    return tokens


@pytest.mark.slow
async def test_kill_9_under_http_load_then_restart(tmp_path: Path) -> None:
    seed = int(os.environ.get("PERDURE_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"PERDURE_CRASH_SEED={seed}")
    db, log = tmp_path / "dev.db", tmp_path / "effects.log"
    env = {"PERDURE_TEST_LOG": str(log), "PERDURE_TEST_STEP_MS": "2"}
    started = time.monotonic()
    load = Load()

    first = DevServer(APP, db, stderr=tmp_path / "first.err").start(env)
    try:
        kill_after = rng.randint(*KILL_AFTER_ACKS)
        await load_until_killed(first, load, kill_after, list(range(REQUESTS)))
    finally:
        first.kill()
    assert first.proc is not None and first.proc.returncode == -signal.SIGKILL
    killed_at = time.monotonic() - started

    second = DevServer(APP, db, stderr=tmp_path / "second.err").start(env)
    try:
        await finish(second, load)
        code, stop_s = second.stop(signal.SIGTERM)
    finally:
        second.kill()
    assert code == 0, second.stderr
    assert "stopped cleanly" in second.output

    # ---- the database and the log agree with every answer
    store = open_store(f"sqlite:///{db}")
    try:
        reader = store.reader()
        invocations = reader.list_invocations(limit=10 * REQUESTS)
        assert len(invocations) == REQUESTS, "one invocation per idempotency key, no more"
        assert sorted(inv.idempotency_key or "" for inv in invocations) == [
            rid_of(i) for i in range(REQUESTS)
        ]
        tokens = read_log(log)
        reexecuted = 0
        for i in range(REQUESTS):
            inv = reader.get_invocation(ids.idempotent_id("counter", "add", key_of(i), rid_of(i)))
            assert inv is not None and inv.status is Status.COMPLETED, (i, inv)
            assert inv.outcome is not None and inv.outcome.failure is None and inv.outcome.value is not None
            output = json.loads(inv.outcome.value)
            assert output["rid"] == rid_of(i)
            if not is_send(i):
                assert load.answers[i] == output, "the caller got the durable answer"
            logged = tokens[rid_of(i)]
            assert logged.count(str(output["token"])) == 1, (i, logged)
            assert logged[-1] == output["token"], "no execution after the recorded one"
            reexecuted += len(logged) - 1
        per_key: dict[str, list[str]] = defaultdict(list)
        for i in range(REQUESTS):
            per_key[key_of(i)].append(rid_of(i))
        for key, rids in per_key.items():
            state = reader.get_all_state("counter", key)
            assert json.loads(state[b"count"]) == len(rids), key
            seen = json.loads(state[b"seen"])
            assert sorted(seen) == rids, f"{key}: every request counted exactly once"
    finally:
        await store.close()

    total = time.monotonic() - started
    print(
        f"kill -9 after {len(load.acked_before_kill)} acknowledged requests ({killed_at:.1f} s), "
        f"{load.in_flight_at_kill} in flight, client errors {dict(load.errors)}; after restart "
        f"{REQUESTS - len(load.acked_before_kill)} repeated; {reexecuted} ctx.run re-executions; "
        f"SIGTERM stop {stop_s:.2f} s; total {total:.1f} s"
    )
    assert total < 60
