"""The engine process the kill test SIGKILLs: a virtual object whose steps leave a trail outside perdure.

    python tests/crash/worker.py --store sqlite:///run.db --log steps.log --invocations 200 --keys 20

Invocation i (input `i`, key `k{i % K}`, idempotency key `inv-{i}`) runs three `ctx.run` steps; each
appends `"{i} {step} {token}\\n"` to the log with one `O_APPEND` write and returns the fresh token,
so the journal says which execution's result was stored. Then the handler bumps the key's `count`
and appends `i` to its `seen` list. The worker prints `STARTED` once the engine is open (recovery
included) and `DONE` once every invocation has its result, then exits 0.

Run it again on the same files after a kill and it carries on: resubmitting with the same
idempotency keys joins the invocations already accepted instead of creating new ones.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import perdure
from perdure import ObjectContext, VirtualObject
from perdure.runtime import loop as event_loop

SERVICE = "crashy"
HANDLER = "work"
STEPS = (1, 2, 3)


def key_of(i: int, keys: int) -> str:
    return f"k{i % keys}"


def idempotency_key(i: int) -> str:
    return f"inv-{i}"


def build_app(log_fd: int, step_ms: float) -> tuple[perdure.App, Callable[..., Awaitable[Any]]]:
    """The app, effects bound to the open log; a step sleeps up to `step_ms`, logs, then up to half that."""
    crashy = VirtualObject(SERVICE)

    async def effect(tag: int, step: int) -> str:
        # Real delays on both sides of the effect: kills land before it (the step runs again,
        # leaving one line) and after it but before its result is stored (the step runs again,
        # leaving an earlier line whose token the journal must not hold).
        await asyncio.sleep(random.uniform(0, step_ms) / 1000)
        token = uuid.uuid4().hex
        os.write(log_fd, f"{tag} {step} {token}\n".encode())
        await asyncio.sleep(random.uniform(0, step_ms / 2) / 1000)
        return token

    @crashy.handler(HANDLER)
    async def work(ctx: ObjectContext, tag: int) -> list[str]:
        tokens = [await ctx.run(f"step {step}", effect, args=(tag, step)) for step in STEPS]
        count = await ctx.get("count") or 0
        ctx.set("count", count + 1)
        seen = await ctx.get("seen") or []
        ctx.set("seen", [*seen, tag])
        return tokens

    return perdure.App([crashy]), work


async def run(store: str, log: Path, invocations: int, keys: int, step_ms: float) -> None:
    log_fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        app, work = build_app(log_fd, step_ms)
        async with perdure.Engine(app, store=store, partitions=4) as engine:
            print("STARTED", flush=True)

            # Per-key FIFO is only meaningful if each key's invocations are *accepted* in ascending
            # order: `object_send` returns once the invocation is durably in the key's inbox, so
            # awaiting the sends of one key one after the other fixes that order, while the keys
            # proceed concurrently. A kill leaves each key with an accepted prefix of its sequence;
            # the next run's sends join that prefix (same idempotency keys) and append the rest in
            # order. Only then do we wait for the results, joining by the same idempotency keys.
            async def send_key(k: int) -> None:
                for i in range(k, invocations, keys):
                    key, idem = key_of(i, keys), idempotency_key(i)
                    await engine.object_send(work, key=key, arg=i, idempotency_key=idem)

            await asyncio.gather(*(send_key(k) for k in range(keys)))
            results = await asyncio.gather(
                *(
                    engine.object_call(work, key=key_of(i, keys), arg=i, idempotency_key=idempotency_key(i))
                    for i in range(invocations)
                )
            )
            if len(results) != invocations or any(len(tokens) != len(STEPS) for tokens in results):
                raise SystemExit(f"unexpected results: {results!r}")
        print("DONE", flush=True)
    finally:
        os.close(log_fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--store", required=True, help="a store URL: sqlite:///… or postgresql://…")
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--invocations", type=int, default=200)
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument(
        "--step-ms",
        type=float,
        default=5.0,
        help="a step sleeps up to this long before its effect, half after",
    )
    args = parser.parse_args()
    # the loop `perdure dev` runs on (uvloop where installed): SIGKILLs hit the servers' setup
    event_loop.run(run(args.store, args.log, args.invocations, args.keys, args.step_ms))


if __name__ == "__main__":
    main()
