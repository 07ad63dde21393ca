"""What the engine knows of services: names, kinds and the policies that govern their invocations."""

from __future__ import annotations

from dataclasses import dataclass, field

from perdure.defaults import ABORT_TIMEOUT_MS, INACTIVITY_TIMEOUT_MS, RETENTION_MS
from perdure.retry import DEFAULT, RetryPolicy


@dataclass(frozen=True)
class HandlerInfo:
    name: str
    keyed: bool  # addressed by key (objects, workflows)
    exclusive: bool  # takes its key's lock: one at a time per key, in arrival order
    workflow_run: bool = False  # runs at most once per key (its id is derived from the key)
    workflow: bool = False  # a handler of a workflow (its run or a shared one): may use promises
    retry_policy: RetryPolicy = DEFAULT
    inactivity_timeout_ms: int = INACTIVITY_TIMEOUT_MS
    idempotency_retention_ms: int = RETENTION_MS
    journal_retention_ms: int = RETENTION_MS
    workflow_retention_ms: int = RETENTION_MS  # a completed workflow run blocks its key this long
    deployment_id: str | None = None  # None: served in-process by the engine's app
    protocol_version: int = 0  # what new invocations of a remote handler negotiate
    abort_timeout_ms: int = ABORT_TIMEOUT_MS

    @property
    def writes_state(self) -> bool:
        return self.keyed and self.exclusive


@dataclass
class Registry:
    """service name -> handler name -> HandlerInfo."""

    services: dict[str, dict[str, HandlerInfo]] = field(default_factory=dict)

    def add(self, service: str, handler: HandlerInfo) -> None:
        self.services.setdefault(service, {})[handler.name] = handler

    def get(self, service: str, handler: str) -> HandlerInfo | None:
        handlers = self.services.get(service)
        return None if handlers is None else handlers.get(handler)

    def replace_service(self, service: str, handlers: list[HandlerInfo]) -> None:
        """Serve `service` with exactly these handlers from now on (a new deployment revision)."""
        self.services[service] = {h.name: h for h in handlers}

    def remove_service(self, service: str) -> None:
        self.services.pop(service, None)

    def deployment_of(self, service: str) -> str | None:
        """The remote deployment serving `service` now (None: in-process or unknown)."""
        handlers = self.services.get(service)
        if not handlers:
            return None
        return next(iter(handlers.values())).deployment_id
