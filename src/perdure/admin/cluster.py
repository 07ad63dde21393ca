"""`GET /cluster`: the nodes of the engine's cluster, partition leases and owners, per-partition backlog.

An engine alone on its database (memory, SQLite) is a cluster of one node that runs its one
partition; on PostgreSQL the answer is the database's view, the same from every node.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from perdure.runtime.node import Engine
from perdure.storage.api import ClusterDatabase


async def describe(engine: Engine) -> dict[str, Any]:
    store = engine.store
    if not isinstance(store, ClusterDatabase):
        return {
            "node": "local",
            "mode": "single",
            "partitions": 1,
            "nodes": [{"node": "local", "alive": True, "host": socket.gethostname(), "pid": os.getpid()}],
            "leases": [{"partition": 0, "node": "local", "epoch": 0, "running_here": True}],
            "backlog": {},
        }
    membership = store.membership
    members = await membership.members()
    leases = await membership.leases()
    backlog = await membership.backlog()
    here = {p.number for p in engine.partitions}
    return {
        "node": store.node,
        "mode": "cluster",
        "partitions": store.partitions,
        "nodes": [
            {
                "node": m.node,
                "alive": m.alive,
                "host": m.host,
                "pid": m.pid,
                "ingress_url": m.ingress_url,
                "admin_url": m.admin_url,
                "started_at": m.started_at,
                "partitions": sorted(lease.partition for lease in leases if lease.node == m.node),
            }
            for m in members
        ],
        "leases": [
            {
                "partition": lease.partition,
                "node": lease.node,
                "epoch": lease.epoch,
                "running_here": lease.partition in here,
            }
            for lease in leases
        ],
        "backlog": {str(p): n for p, n in sorted(backlog.items())},
    }
