"""Helpers for the Kafka example tests: the examples as modules, bounded waits, quick-joining options."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import perdure
from perdure.kafka import Broker

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# tansu holds a consumer group's first join for half the session timeout: keep it short here.
FAST = {"auto.offset.reset": "earliest", "session.timeout.ms": "2000", "heartbeat.interval.ms": "200"}


def load_example(name: str) -> ModuleType:
    """examples/NAME.py as a fresh module (its simulated systems start empty)."""
    spec = importlib.util.spec_from_file_location(f"kafka_examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def subscribe(engine: perdure.Engine, broker: Broker, topic: str, sink: str) -> str:
    """Register the broker as cluster `local` and subscribe `sink` to `topic`; the subscription id."""
    await engine.put_kafka_cluster("local", {"bootstrap.servers": broker.bootstrap_servers})
    sub = await engine.create_subscription(f"kafka://local/{topic}", sink, FAST)
    return sub.id


def completions(engine: perdure.Engine) -> list[str]:
    """The ids of invocations completing from now on, in completion order."""
    done: list[str] = []
    engine.add_completion_listener(done.append)
    return done


async def wait_until(condition: Callable[[], object], within: float = 15.0, what: str = "") -> None:
    """Poll `condition` every 20 ms; fail the test after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what or condition}")
        await asyncio.sleep(0.02)
