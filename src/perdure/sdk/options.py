"""Options of services and handlers, written once and shared by every service kind."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import timedelta

from perdure.retry import RetryPolicy


@dataclass(frozen=True)
class HandlerOptions:
    """Settings of a service, or of one handler (a handler's options override its service's).

    `retry_policy` governs failed attempts (anything but `TerminalError`);
    `inactivity_timeout` is how long an attempt waiting on a call or awakeable stays in memory
    before it is suspended (long sleeps suspend at once); retentions say how long a completed
    invocation's result is kept for idempotent repeats, how long its journal stays readable, and
    how long a completed workflow keeps its key (state, promises) before it can run again.

        HandlerOptions(retry_policy=RetryPolicy(max_attempts=5), idempotency_retention=timedelta(hours=1))
    """

    retry_policy: RetryPolicy | None = None
    inactivity_timeout: timedelta | None = None
    idempotency_retention: timedelta | None = None
    journal_retention: timedelta | None = None
    workflow_retention: timedelta | None = None
    documentation: str | None = None

    def merged_over(self, base: HandlerOptions | None) -> HandlerOptions:
        """These options, with unset fields taken from `base`."""
        if base is None:
            return self
        return replace(
            base, **{f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        )
