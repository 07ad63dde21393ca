"""The test app's handlers declared with Restate's Python SDK: its ingress client takes handlers.

Imported only once `restate-sdk` is importable (see test_restate_client.py). The bodies never
run: perdure runs the real handlers; the client only reads names and type hints.
"""

from __future__ import annotations

import restate

greeter = restate.Service("greeter")
counter = restate.VirtualObject("counter")


@greeter.handler()
async def greet(ctx: restate.Context, name: str) -> str:
    raise NotImplementedError


@counter.handler()
async def add(ctx: restate.ObjectContext, n: int) -> int:
    raise NotImplementedError


signup = restate.Workflow("signup")


@signup.main()
async def run(ctx: restate.WorkflowContext, email: str) -> str:
    raise NotImplementedError


@signup.handler()
async def click(ctx: restate.WorkflowSharedContext, secret: str) -> None:
    raise NotImplementedError
