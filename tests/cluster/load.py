"""A client of a cluster under faults, and the checks of what the database holds afterwards.

The client sends REQUESTS requests over KEYS keys to the nodes' ingresses in turn — calls of
`counter/{key}/add` and of `relay/{key}/add` (which calls the counter across partitions), each with
its request id as idempotency key — and does what a client of a durable service does: a request
without an answer (the node died, 503 during a handover) is sent again, to another node, with the
same idempotency key, until it has one. Kafka records go to `counter/{key}/record`.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgspec

from perdure.storage import open_store
from perdure.storage.api import Status


def key_of(i: int, keys: int) -> str:
    return f"k{i % keys}"


def rid_of(i: int) -> str:
    return f"r{i:05d}"


@dataclass
class Load:
    """What the client saw."""

    answers: dict[int, dict[str, object]] = field(default_factory=dict)
    retries: Counter[str] = field(default_factory=Counter)  # why requests were sent again
    acked: int = 0


async def run(
    ingresses: Callable[[], list[str]],
    requests: int,
    keys: int,
    load: Load,
    *,
    concurrency: int = 32,
    deadline_s: float = 120.0,
) -> None:
    """Send every request until it has its answer; `ingresses()` lists the nodes to use now."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + deadline_s

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty() and loop.time() < stop_at:
            i = queue.get_nowait()
            service = "relay" if i % 3 == 0 else "counter"
            while loop.time() < stop_at:
                bases = ingresses()
                base = random.choice(bases)
                try:
                    response = await client.post(
                        f"{base}/{service}/{key_of(i, keys)}/add",
                        json=rid_of(i),
                        headers={"idempotency-key": rid_of(i)},
                    )
                except httpx.HTTPError as e:
                    load.retries[type(e).__name__] += 1
                    await asyncio.sleep(0.05)
                    continue
                if response.status_code == 200:
                    load.answers[i] = response.json()
                    load.acked += 1
                    break
                load.retries[str(response.status_code)] += 1
                assert response.status_code == 503, (i, response.status_code, response.text)
                await asyncio.sleep(0.05)

    limits = httpx.Limits(max_keepalive_connections=0)  # a dead node's connections are not reused
    async with httpx.AsyncClient(timeout=15, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    missing = requests - len(load.answers)
    assert missing == 0, f"{missing} requests got no answer in {deadline_s} s (retries: {load.retries})"


@dataclass
class Outcome:
    """What the database holds at the end."""

    seen: dict[str, list[str]]  # counter key -> request ids in the order the key counted them
    tokens: dict[str, str]  # request id -> the token its counter invocation's ctx.run stored
    statuses: Counter[Status]


async def read(url: str) -> Outcome:
    store = open_store(url)
    try:
        reader = store.reader()
        invocations = reader.list_invocations(limit=10**9)
        statuses = Counter(inv.status for inv in invocations)
        tokens: dict[str, str] = {}
        seen: dict[str, list[str]] = {}
        for inv in invocations:
            if inv.service == "counter" and inv.outcome is not None and inv.outcome.value is not None:
                answer = msgspec.json.decode(inv.outcome.value)
                assert answer["rid"] not in tokens, f"{answer['rid']} was counted twice"
                tokens[answer["rid"]] = answer["token"]
                if inv.key is not None and inv.key not in seen:
                    state = reader.get_all_state("counter", inv.key)
                    seen[inv.key] = msgspec.json.decode(state.get(b"seen", b"[]"))
        return Outcome(seen, tokens, statuses)
    finally:
        await store.close()


def check(outcome: Outcome, log: Path, rids: dict[str, str]) -> dict[str, int]:
    """Every request (`rids`: request id -> its key) counted once by its key, and its stored step
    result the last execution of it: a step whose result was stored never ran again. Returns the
    number of steps that ran more than once because a kill lost their result."""
    assert outcome.statuses == Counter({Status.COMPLETED: sum(outcome.statuses.values())}), outcome.statuses
    by_key: dict[str, list[str]] = defaultdict(list)
    for rid, key in rids.items():
        by_key[key].append(rid)
    for key, expected in by_key.items():
        counted = outcome.seen.get(key, [])
        assert sorted(counted) == sorted(expected), (key, Counter(counted) - Counter(expected))
    executions: dict[str, list[str]] = defaultdict(list)
    for line in log.read_text().splitlines():
        rid, token, _pid = line.split()
        if token != "start":
            executions[rid].append(token)
    rerun = 0
    for rid in rids:
        stored = outcome.tokens[rid]
        assert executions[rid].count(stored) == 1, (rid, executions[rid])
        assert executions[rid][-1] == stored, f"{rid}: its step ran again after its result was stored"
        rerun += len(executions[rid]) > 1
    return {"steps re-run (result lost)": rerun}
