"""Queue per key, durable steps, postponed processing — the seed's `user_updates.ts` in perdure.

Each user's updates are processed one at a time, in order; a slow user never blocks the others.
If the profile system is not ready, the handler sleeps durably for 5 seconds and tries again.
Every step's result is journaled, so a crash resumes at the step where it stopped.

Run it in-process:  python examples/user_updates.py [--users 20] [--db .perdure/demo.db]
Fed from Kafka:     python3 dev.py demo   (examples/demo.py: `perdure dev … --kafka embedded`)
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import perdure
from perdure import Context, ObjectContext, Service, TerminalError, VirtualObject

NOT_READY = "NOT_READY"


@dataclass
class UserUpdate:
    profile: dict[str, str]
    permissions: list[str] = field(default_factory=list)
    resources: list[str] = field(default_factory=list)


# --- the external systems this handler keeps in sync (simulated in memory) ----------------------


class Systems:
    """Stand-ins for a profile store, a permission service and a provisioning API.

    The profile store is "not ready" for a user the first `not_ready_times` times it is asked,
    and once more for a brand-new account (`profile["account"] == "new"`): it is still being
    created. Either way the handler shows the durable retry-with-sleep loop.
    """

    def __init__(self, not_ready_times: int = 0) -> None:
        self.not_ready_times = not_ready_times
        self.asked: dict[str, int] = {}
        self.roles: dict[str, str] = {}
        self.provisioned: dict[str, list[str]] = {}
        self.unknown_permissions = {"auditor"}  # not supported by the permission service yet

    def update_profile(self, profile: dict[str, str]) -> str:
        name = profile["name"]
        self.asked[name] = self.asked.get(name, 0) + 1
        creating = 1 if profile.get("account") == "new" else 0
        if self.asked[name] <= self.not_ready_times + creating:
            return NOT_READY
        return f"user-{name}"

    def set_permissions(self, user_id: str, permissions: list[str]) -> str:
        unknown = sorted(set(permissions) & self.unknown_permissions)
        if unknown:  # a bad record for this version: retrying cannot help
            raise TerminalError(f"the permission service does not know {', '.join(unknown)}", status_code=422)
        role_id = f"role-{'-'.join(sorted(permissions)) or 'none'}"
        self.roles[user_id] = role_id
        return role_id

    def provision_resources(self, user_id: str, role_id: str, resources: list[str]) -> bool:
        self.provisioned.setdefault(user_id, []).extend(resources)
        return True


systems = Systems()

# --- the handler --------------------------------------------------------------------------------

user_updates = VirtualObject("userUpdates")


def verify_event(event: UserUpdate) -> UserUpdate:
    if "name" not in event.profile:
        raise TerminalError("a user update needs profile.name", status_code=400)
    return event


#: How long to wait before asking the profile system again (the seed's 5 s).
RETRY_AFTER = timedelta(seconds=5)


@user_updates.handler("updateUserEvent")
async def update_user_event(ctx: ObjectContext, event: UserUpdate) -> str:
    event = verify_event(event)
    user_id = await ctx.run("update profile", systems.update_profile, args=(event.profile,))
    while user_id == NOT_READY:
        await ctx.sleep(RETRY_AFTER)
        user_id = await ctx.run("update profile", systems.update_profile, args=(event.profile,))
    role_id = await ctx.run("set permissions", systems.set_permissions, args=(user_id, event.permissions))
    await ctx.run(
        "provision resources", systems.provision_resources, args=(user_id, role_id, event.resources)
    )
    ctx.set("role", role_id)
    return role_id


#: The permission service's admin side: teaching it a permission is the demo's "fix"
#: (examples/demo.py then re-drives the record that failed on it: `perdure dlq redrive`).
permission_service = Service("permissionService")


@permission_service.handler()
async def define(ctx: Context, permission: str) -> str:
    def add() -> str:
        systems.unknown_permissions.discard(permission)
        return f"the permission service knows {permission} now"

    return await ctx.run("define permission", add)


app = perdure.App([user_updates, permission_service])

# --- the demo -----------------------------------------------------------------------------------


async def demo(users: int, db: Path) -> None:
    systems.not_ready_times = 1  # every profile is "not ready" once: each user sleeps once
    db.parent.mkdir(parents=True, exist_ok=True)
    async with perdure.Engine(app, store=f"sqlite:///{db}") as engine:
        started = time.perf_counter()
        names = [f"user{i:02d}" for i in range(users)]
        updates = [
            UserUpdate(
                profile={"name": name}, permissions=["read", "write"][: 1 + i % 2], resources=[f"disk-{i}"]
            )
            for i, name in enumerate(names)
        ]
        wait = RETRY_AFTER.total_seconds()
        print(
            f"processing {users} user updates (each profile is 'not ready' once: a {wait:g} s durable sleep)"
        )
        roles = await asyncio.gather(
            *(
                engine.object_call(update_user_event, key=name, arg=u)
                for name, u in zip(names, updates, strict=True)
            )
        )
        elapsed = time.perf_counter() - started
        print(f"{'user':<10} {'role':<24} {'state':<30}")
        for name, role in zip(names, roles, strict=True):
            state = engine.reader().get_all_state("userUpdates", name)
            print(f"{name:<10} {role:<24} {state.get(b'role', b'').decode():<30}")
        print(f"{users} users updated in {elapsed:.1f} s (all slept concurrently; journal in {db})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--db", type=Path, default=Path(".perdure/user_updates.db"))
    parser.add_argument(
        "--sleep", type=float, default=5.0, help="seconds to wait when a profile is not ready"
    )
    args = parser.parse_args()
    global RETRY_AFTER
    RETRY_AFTER = timedelta(seconds=args.sleep)
    asyncio.run(demo(args.users, args.db))


if __name__ == "__main__":
    main()
