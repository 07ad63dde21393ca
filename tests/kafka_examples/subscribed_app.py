"""An app that declares its Kafka subscription in code; `perdure dev … --kafka embedded` supplies
the cluster `local` it names (tests/cli/test_dev.py runs it)."""

from __future__ import annotations

from typing import Any

import perdure
from perdure import KafkaSubscription, ObjectContext, VirtualObject

events = VirtualObject("events")


@events.handler()
async def seen(ctx: ObjectContext, event: dict[str, Any]) -> int:
    """Count the key's events and keep the last one with the offset it came from."""
    n = (await ctx.get("n", type_hint=int) or 0) + 1
    ctx.set("n", n)
    ctx.set("last", {**event, "offset": ctx.request().headers.get("kafka.offset")})
    return n


app = perdure.App(
    [events],
    subscriptions=[KafkaSubscription("kafka://local/events", seen, {"auto.offset.reset": "earliest"})],
)
