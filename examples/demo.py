"""The guided demo: the seed example fed from Kafka, with a queue per user.

It starts `perdure dev examples/user_updates.py:app --kafka embedded` — engine, SQLite journal,
HTTP ingress, admin API and a local Kafka broker (cluster `local`) in one process — and then:

1. creates the topic `user-updates` (4 partitions) and subscribes the `updateUserEvent` handler to
   it through the admin API (`POST /subscriptions`, printed as the curl command);
2. produces 2,000 user updates for 50 users, keyed by user. Five users are brand-new accounts
   whose profile is not ready yet: their first update sleeps 5 s durably (`ctx.sleep`) and their
   later updates queue behind it, while the other users — on the same partitions — go on;
3. follows the invocations to completion (a progress bar for the other users, one for the five);
4. shows per-user results (updates handled, the role kept in K/V state, in offset order), the
   subscription's offsets per partition, a poison record parked by the subscription's
   `on.failure=park` while its key went on — then the fix (the permission service learns the
   record's permission) and `perdure dlq redrive`, which runs it once more — and one HTTP call of
   the same handler (Kafka and RPC, no code change);
5. keeps running until Ctrl-C (or stops at once with --exit).

    python3 dev.py demo              # or: .venv/bin/python examples/demo.py [--exit] [--users 50] ...
    python3 dev.py demo --http       # the HTTP tour instead: calls, delayed sends, idempotency keys
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import demo_http
import httpx
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from demo_support import (
    ROOT,
    console,
    free_ports,
    perdure_command,
    run_cli,
    show,
    start_server,
    supervise,
    wait_healthy,
)
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

TOPIC, PARTITIONS = "user-updates", 4
SINK = "service://userUpdates/updateUserEvent"
#: Each update asks for one of these permission sets, so each user's final role shows which
#: update ran last.
PERMISSIONS = (["read"], ["read", "write"], ["admin", "read"], ["billing", "read"])
#: How long the demo waits for all invocations before it says what is missing.
WAIT_S = 60.0
#: The example's durable sleep when a profile is not ready (examples/user_updates.py RETRY_AFTER).
SLEEP_S = 5


def role_of(permissions: list[str]) -> str:
    """What the example's `set_permissions` answers (and the handler stores as `role`)."""
    return f"role-{'-'.join(sorted(permissions)) or 'none'}"


@dataclass
class Plan:
    """The records to produce, and what the handler should make of them."""

    users: list[str]
    new_accounts: list[str]
    records: list[tuple[str, bytes]] = field(default_factory=list)  # (key, value), in produce order
    per_user: Counter[str] = field(default_factory=Counter)
    last_role: dict[str, str] = field(default_factory=dict)
    poison_key: str = ""

    @property
    def others(self) -> list[str]:
        return [u for u in self.users if u not in self.new_accounts]


#: A poison record: a permission the permission service does not know (yet), so the handler fails
#: terminally on it. The subscription parks it (`on.failure=park`); after the fix, it is re-driven.
NEW_PERMISSION = "auditor"


def poison(user: str) -> bytes:
    return json.dumps({"profile": {"name": user}, "permissions": [NEW_PERMISSION], "resources": []}).encode()


def make_plan(users: int, updates: int, new: int) -> Plan:
    """`updates` records round-robin over `users` users, `new` of them brand-new accounts (their
    first update says `"account": "new"`), and one poison record half way."""
    names = [f"user{i:02d}" for i in range(users)]
    new_accounts = sorted({names[(k * users // new + 7) % users] for k in range(new)}) if new else []
    plan = Plan(names, new_accounts, poison_key=names[min(3, users - 1)])
    order = [(j, i) for j in range(math.ceil(updates / users)) for i in range(users)][:updates]
    for n, (j, i) in enumerate(order):
        if n == len(order) // 2:
            plan.records.append((plan.poison_key, poison(plan.poison_key)))
        name, permissions = names[i], PERMISSIONS[(i + j) % len(PERMISSIONS)]
        profile = {"name": name, **({"account": "new"} if j == 0 and name in new_accounts else {})}
        update = {"profile": profile, "permissions": permissions, "resources": [f"disk-{j}"]}
        plan.records.append((name, json.dumps(update).encode()))
        plan.per_user[name] += 1
        plan.last_role[name] = role_of(permissions)
    return plan


# ---- the Kafka side: a topic, records


async def create_topic(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
    finally:
        await admin.close()


async def produce(bootstrap: str, plan: Plan) -> dict[str, int]:
    """Produce the plan's records with a progress bar; returns each user's partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    partitions: dict[str, int] = {}
    try:
        with Progress(
            TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), console=console
        ) as progress:
            task = progress.add_task(f"producing to {TOPIC}", total=len(plan.records))
            sent = []
            for key, value in plan.records:
                future = await producer.send(TOPIC, value, key=key.encode())
                future.add_done_callback(lambda _: progress.advance(task))
                sent.append((key, future))
            await producer.flush()
            for key, future in sent:
                partitions[key] = (await future).partition
    finally:
        await producer.stop()
    return partitions


# ---- the perdure side: follow the invocations over the admin API


def query(http: httpx.Client, admin: str, sql: str) -> list[dict[str, Any]]:
    response = http.post(f"{admin}/query", json={"query": sql}, headers={"accept": "application/json"})
    response.raise_for_status()
    rows: list[dict[str, Any]] = response.json()["rows"]
    return rows


COMPLETED = (
    "SELECT target_service_key AS user, count(*) AS n FROM sys_invocation "
    "WHERE target_service_name = 'userUpdates' AND completion_result = 'success' GROUP BY 1"
)


def follow(
    http: httpx.Client, admin: str, plan: Plan, started: float
) -> tuple[dict[str, float], Counter[str]]:
    """Progress bars until every update is handled; returns when each user was done, and counts."""
    done_at: dict[str, float] = {}
    counts: Counter[str] = Counter()
    groups = {
        f"{len(plan.others)} other users": plan.others,
        f"{len(plan.new_accounts)} new accounts (first update: profile not ready, sleeps {SLEEP_S} s)": (
            plan.new_accounts
        ),
    }
    columns = (TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        tasks = {
            progress.add_task(name, total=sum(plan.per_user[u] for u in users)): users
            for name, users in groups.items()
            if users
        }
        deadline = time.monotonic() + WAIT_S
        while len(done_at) < len(plan.users) and time.monotonic() < deadline:
            counts = Counter({row["user"]: row["n"] for row in query(http, admin, COMPLETED)})
            now = time.monotonic() - started
            for user in plan.users:
                if user not in done_at and counts[user] >= plan.per_user[user]:
                    done_at[user] = now
            for task, users in tasks.items():
                progress.update(task, completed=sum(counts[u] for u in users))
            time.sleep(0.1)
    return done_at, counts


ROLES = (
    "SELECT service_key AS user, value_utf8 AS role FROM state "
    "WHERE service_name = 'userUpdates' AND key = 'role'"
)
TOTALS = "SELECT count(*) AS n FROM sys_invocation WHERE target_service_name = 'userUpdates'"


def results_table(
    plan: Plan,
    partitions: dict[str, int],
    done_at: dict[str, float],
    counts: Counter[str],
    roles: dict[str, str],
) -> Table:
    """The new accounts and a few other users in full; one summary row for the rest."""
    table = Table("user", "partition", "updates", "role", "done after", "", box=None, header_style="bold")
    shown = plan.new_accounts + plan.others[: max(0, 12 - len(plan.new_accounts))]
    for user in shown:
        role, want = roles.get(user, "-"), plan.last_role[user]
        table.add_row(
            user,
            str(partitions.get(user, "?")),
            f"{counts[user]}/{plan.per_user[user]}",
            f"{role} [green]✓[/]" if role == want else f"{role} [red]✗ (expected {want})[/]",
            f"{done_at[user]:.1f} s" if user in done_at else "[yellow]not yet[/]",
            f"[dim]new account: slept {SLEEP_S} s[/]" if user in plan.new_accounts else "",
        )
    rest = [u for u in plan.others if u not in shown]
    if rest:
        complete = sum(1 for u in rest if counts[u] == plan.per_user[u])
        right = sum(1 for u in rest if roles.get(u) == plan.last_role[u])
        latest = max((done_at[u] for u in rest if u in done_at), default=0.0)
        table.add_row(
            f"{len(rest)} more", "", f"{complete} × all", f"{right} × [green]✓[/]", f"≤ {latest:.1f} s"
        )
    return table


def partitions_table(subscription: dict[str, Any], partitions: dict[str, int]) -> Table:
    users = Counter(partitions.values())
    table = Table(
        "partition",
        "users",
        "consumed offset",
        "high watermark",
        "lag",
        "in flight",
        "paused",
        box=None,
        header_style="bold",
        pad_edge=False,
    )
    for p in subscription.get("partitions", []):
        table.add_row(
            f"{p['topic']}/{p['partition']}",
            str(users[p["partition"]]),
            *(str(p[k]) if p[k] is not None else "-" for k in ("consumed_offset", "high_watermark", "lag")),
            str(p["in_flight"]),
            "yes" if p["paused"] else "no",
        )
    return table


def redrive_after_fix(http: httpx.Client, ingress: str, admin: str, subscription_id: str) -> None:
    """The fix (the permission service learns the permission), then the parked record re-driven."""
    show(
        http,
        f"7. The fix: the permission service learns {NEW_PERMISSION!r}",
        f"{ingress}/permissionService/define",
        body=NEW_PERMISSION,
    )
    [parked] = http.get(f"{admin}/dead-letters", params={"subscription": subscription_id}).json()[
        "dead_letters"
    ]
    console.print("\n[bold]8. Re-drive the parked record: it runs once more, now with the fix[/]")
    run_cli("dlq", "redrive", "--subscription", subscription_id, "--admin-url", admin)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        letter = http.get(f"{admin}/dead-letters/{parked['id']}").json()
        if letter["redrives"] and letter["redrives"][-1]["status"] not in (None, "running", "pending"):
            break
        time.sleep(0.1)
    run_cli("dlq", "show", parked["id"], "--admin-url", admin)
    show(
        http,
        f"{parked['key']}'s state now: the re-driven record's role",
        f"{admin}/state/userUpdates/{parked['key']}",
        method="GET",
    )


def showcase(ingress: str, admin: str, bootstrap: str, plan: Plan) -> list[str]:
    """The tour; returns what to try next."""
    produced = len(plan.records)
    with httpx.Client(timeout=30) as http:
        console.print("\n[bold]1. A topic, and a subscription that pushes its records to the handler[/]")
        console.print(
            f"[cyan]$ kafka-topics --bootstrap-server {bootstrap} --create --topic {TOPIC} "
            f"--partitions {PARTITIONS}[/]  [dim](done here with aiokafka's admin client)[/]"
        )
        asyncio.run(create_topic(bootstrap))
        answer = show(
            http,
            "Subscribe the handler to the topic (records become invocations keyed by the record key)",
            f"{admin}/subscriptions",
            body={
                "source": f"kafka://local/{TOPIC}",
                "sink": SINK,
                "options": {"auto.offset.reset": "earliest", "on.failure": "park"},
            },
        )
        if not answer.is_success:
            raise SystemExit(f"could not create the subscription: {answer.status_code} {answer.text}")
        subscription_id = answer.json()["id"]
        console.print(
            f"[dim]  (the same with the CLI: perdure subscriptions create kafka://local/{TOPIC} {SINK} "
            "--option auto.offset.reset=earliest --option on.failure=park)[/]"
        )

        console.print(
            f"\n[bold]2. {produced - 1:,} user updates for {len(plan.users)} users, keyed by user, "
            f"and one poison record[/]\n"
            f"  {', '.join(plan.new_accounts)} are new accounts: the profile store is not ready for them "
            f"yet, so their first update\n  sleeps {SLEEP_S} s durably (ctx.sleep) and their later updates "
            "queue behind it. Everyone else should not wait."
        )
        started = time.monotonic()
        partitions = asyncio.run(produce(bootstrap, plan))

        console.print("\n[bold]3. perdure pushes every record to the handler, with a queue per user[/]")
        done_at, counts = follow(http, admin, plan, started)

        roles = {row["user"]: json.loads(row["role"]) for row in query(http, admin, ROLES)}
        console.print(
            "\n[bold]4. Per user: updates handled, and the role kept in K/V state[/] "
            "[dim](✓ = the role of the user's last update: handled in offset order)[/]"
        )
        console.print(results_table(plan, partitions, done_at, counts, roles))
        [totals] = query(http, admin, TOTALS)
        console.print(
            f"  {produced:,} records → {totals['n']:,} invocations: {sum(counts.values()):,} updates "
            f"handled and 1 poison record parked. Each record exactly once."
        )
        if plan.new_accounts and plan.new_accounts[0] in partitions:
            slow = plan.new_accounts[0]
            same = [u for u in plan.others if partitions.get(u) == partitions[slow] and u in done_at]
            if same:
                console.print(
                    f"  {slow} shares partition {partitions[slow]} with {len(same)} other users: they were "
                    f"all done after {max(done_at[u] for u in same):.1f} s while {slow} slept; its own "
                    f"{plan.per_user[slow] - 1} later updates waited, in order.\n"
                    "  [bold]A slow key holds up its own queue, never its partition.[/]"
                )

        console.print(
            "\n[bold]5. The subscription, per partition: offsets are stored with the invocations[/]"
        )
        console.print(f"[cyan]$ curl {admin}/subscriptions/{subscription_id}[/]")
        subscription = http.get(f"{admin}/subscriptions/{subscription_id}").json()
        console.print(
            f"  status {subscription.get('status')}, {subscription.get('records', 0):,} records accepted"
        )
        console.print(partitions_table(subscription, partitions))

        console.print(
            "\n[bold]6. The poison record was parked (on.failure=park): its error, its record, and its key "
            "went on[/]"
        )
        run_cli("dlq", "list", "--admin-url", admin)
        console.print(
            f"  {plan.poison_key}'s {plan.per_user[plan.poison_key]} good updates were all handled: a bad "
            "record never blocks its key or its partition."
        )
        redrive_after_fix(http, ingress, admin, subscription_id)

        user = plan.new_accounts[0] if plan.new_accounts else plan.users[0]
        update = {"profile": {"name": user}, "permissions": ["admin", "billing"], "resources": ["disk-http"]}
        show(
            http,
            "9. Kafka and RPC: the same handler, called over HTTP (same queue, same state)",
            f"{ingress}/userUpdates/{user}/updateUserEvent",
            body=update,
        )
        show(http, "Its state, read through the admin API", f"{admin}/state/userUpdates/{user}", method="GET")

    produce_hint = json.dumps({"profile": {"name": user}, "permissions": ["read"]})
    return [
        f"[cyan]kcat -P -b {bootstrap} -t {TOPIC} -K: <<< '{user}:{escape(produce_hint)}'[/]"
        "   [dim](or any Kafka client)[/]",
        f"[cyan]{perdure_command()} subscriptions list --admin-url {admin}[/]",
        f"[cyan]{perdure_command()} invocations list --key {user} --admin-url {admin}[/]",
        f'[cyan]{perdure_command()} sql "SELECT status, count(*) FROM sys_invocation GROUP BY 1" '
        f"--admin-url {admin}[/]",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exit", action="store_true", help="stop the server after the showcase")
    parser.add_argument("--http", action="store_true", help="the HTTP tour instead of the Kafka one")
    parser.add_argument(
        "--db", type=Path, default=ROOT / ".perdure" / "demo.db", help="the demo's SQLite file (recreated)"
    )
    parser.add_argument("--ingress-port", type=int, default=8080, help="used if free, else a free port")
    parser.add_argument("--admin-port", type=int, default=9070, help="used if free, else a free port")
    parser.add_argument("--kafka-port", type=int, default=9092, help="used if free, else a free port")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--new-accounts", type=int, default=5, help="users whose first update sleeps 5 s")
    args = parser.parse_args()
    if args.users < 1 or args.updates < args.users:
        parser.error("--users must be at least 1, and --updates at least --users")

    ingress_port, admin_port, kafka_port = free_ports(args.ingress_port, args.admin_port, args.kafka_port)
    if args.http:
        demo_http.main(args.db, ingress_port, admin_port, exit_now=args.exit)
        return
    ingress, admin = f"http://127.0.0.1:{ingress_port}", f"http://127.0.0.1:{admin_port}"
    bootstrap = f"127.0.0.1:{kafka_port}"
    plan = make_plan(args.users, args.updates, args.new_accounts)
    ports = ["--ingress-port", str(ingress_port), "--admin-port", str(admin_port)]
    server = start_server(args.db, [*ports, "--kafka", "embedded", "--kafka-port", str(kafka_port)])

    def tour() -> list[str]:
        wait_healthy(server, ingress, admin)
        return showcase(ingress, admin, bootstrap, plan)

    supervise(server, tour, exit_now=args.exit)


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
