"""The event loop perdure's servers run on, and the garbage collector's settings for it.

Two measured savings for a process that runs one long-lived loop (docs/performance.md, "Hot
path"):

- **uvloop** where it is installed (`pip install 'perdure[fast]'`): its loop, futures' callbacks
  and socket transports are C. `PERDURE_LOOP=asyncio` forces the standard library's loop;
  `PERDURE_LOOP=uvloop` insists on uvloop and fails at start when it is not installed.
- **A quieter collector.** Every invocation allocates a few hundred container objects; with
  CPython's default thresholds (700, 10, 10) a young-generation collection runs every few
  invocations and walks objects that live as long as the process (modules, the app, the engine).
  `settle()` moves everything alive after startup into the permanent generation (`gc.freeze`)
  and raises the thresholds to (100,000, 20): a collection is then triggered only by a large
  net growth of live objects — at saturation, thousands of invocations in flight — so the work
  in flight is walked a few times a second instead of ~30, and the middle generation (which
  walked it again every tenth young collection, pausing 45–85 ms) is collected 20× more rarely.
  Reference counting still frees acyclic garbage at once; cycles are still collected.

    from perdure.runtime.loop import run
    sys.exit(run(main()))
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

#: The environment variable naming the loop: `uvloop`, `asyncio` or unset (uvloop if installed).
ENV = "PERDURE_LOOP"
LOOPS = ("uvloop", "asyncio")
#: Collector thresholds once the process has started (CPython's defaults: 700 and 10); the oldest
#: generation's is left as it is. docs/performance.md, "Collector thresholds".
GC_THRESHOLDS = (100_000, 20)


class LoopError(RuntimeError):
    """`PERDURE_LOOP` names a loop that cannot be used (unknown, or uvloop not installed).
    Raised at start, before anything runs; not retriable: fix the environment."""


def choice(env: dict[str, str] | os._Environ[str] | None = None) -> str:
    """The loop to use: `PERDURE_LOOP` if set, else `uvloop` when it is importable, else `asyncio`."""
    value = (env if env is not None else os.environ).get(ENV, "").strip().lower()
    if value and value not in LOOPS:
        raise LoopError(f"{ENV}={value!r}: expected one of {', '.join(LOOPS)}")
    if value == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if value == "uvloop":
            raise LoopError(
                f"{ENV}=uvloop but uvloop is not installed: pip install 'perdure[fast]' (or unset {ENV})"
            ) from None
        return "asyncio"
    return "uvloop"


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """A factory of new loops of kind `name` (see `choice`)."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def settle() -> None:
    """Tune the collector for a long-lived server: call once startup is done (imports, app, engine).

    Idempotent enough to call again later: each call freezes what is alive then."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS, gc.get_threshold()[2])


def run(main: Coroutine[Any, Any, T], *, loop: str | None = None) -> T:
    """`asyncio.run(main)` on the chosen loop (`loop`, or `choice()`), the collector `settle`d first."""
    name = loop or choice()
    settle()
    with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
        return runner.run(main)


def current() -> str:
    """The kind of the running loop: `uvloop` or `asyncio` (for banners and tests)."""
    running = asyncio.get_running_loop()
    return "uvloop" if type(running).__module__.startswith("uvloop") else "asyncio"
