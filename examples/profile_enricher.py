"""Event enrichment with K/V state and delayed actions — the seed's `profile_service.ts`.

`userEvent` stores the user's profile and schedules `emit` on the same key one second later;
`featureEvent`s arriving meanwhile are appended to the stored profile; `emit` sends the enriched
profile downstream and clears the key's state.

Run the demo:  python examples/profile_enricher.py
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import perdure
from perdure import ObjectContext, TerminalError, VirtualObject


@dataclass
class UserProfile:
    id: str
    name: str
    email: str
    features: list[str] = field(default_factory=list)


#: Stand-in for the downstream system (a topic, a database): (key, enriched profile) pairs.
downstream: list[tuple[str, UserProfile | None]] = []


def send(key: str, user: UserProfile | None) -> None:
    downstream.append((key, user))


profile = VirtualObject("profile")


@profile.handler("userEvent")
async def user_event(ctx: ObjectContext, event: UserProfile) -> None:
    ctx.set("user", event)
    ctx.object_send(emit, key=ctx.key(), delay=timedelta(seconds=1))


@profile.handler("featureEvent")
async def feature_event(ctx: ObjectContext, feature_event: str) -> None:
    user = await ctx.get("user", type_hint=UserProfile)
    if user is None:
        raise TerminalError("User not found", status_code=404)
    user.features.append(feature_event)
    ctx.set("user", user)


@profile.handler()
async def emit(ctx: ObjectContext) -> None:
    user = await ctx.get("user", type_hint=UserProfile)
    await ctx.run("send downstream", send, args=(ctx.key(), user))
    ctx.clear_all()


app = perdure.App([profile])


async def demo(db: Path) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    async with perdure.Engine(app, store=f"sqlite:///{db}") as engine:
        await engine.object_call(
            user_event, key="alice", arg=UserProfile("alice", "Alice", "alice@example.com")
        )
        await engine.object_call(feature_event, key="alice", arg="dark-mode")
        await engine.object_call(feature_event, key="alice", arg="beta-search")
        print("stored, before emit:", engine.reader().get_all_state("profile", "alice"))
        await asyncio.sleep(1.5)
        print("sent downstream:", downstream)
        print("state after emit:", engine.reader().get_all_state("profile", "alice"))


if __name__ == "__main__":
    asyncio.run(demo(Path(".perdure/profile_enricher.db")))
