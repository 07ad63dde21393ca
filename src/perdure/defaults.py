"""Defaults that several layers apply, each written once (Restate's values).

A leaf module like `perdure.retry`: the SDK's handler options, the engine's registry, the invokers,
the ingress and the admin API all read them from here.
"""

from __future__ import annotations

from datetime import timedelta

#: How long an attempt waiting on a call, an awakeable or lazy state stays in memory before it is
#: suspended (long sleeps suspend at once); for remote deployments, how long a stream may be silent.
INACTIVITY_TIMEOUT = timedelta(minutes=1)
#: After the inactivity timeout asked a remote attempt to suspend, how long until it is aborted.
ABORT_TIMEOUT = timedelta(minutes=10)
#: How long a completed invocation is kept: its idempotency key, its journal, a workflow's key.
RETENTION = timedelta(days=1)

INACTIVITY_TIMEOUT_MS = int(INACTIVITY_TIMEOUT.total_seconds() * 1000)
ABORT_TIMEOUT_MS = int(ABORT_TIMEOUT.total_seconds() * 1000)
RETENTION_MS = int(RETENTION.total_seconds() * 1000)
