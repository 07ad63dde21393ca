"""Where attempts run: the app's handlers in this process, remote handlers on their deployment."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from perdure.engine.actions import Notify, StartAttempt
from perdure.runtime.invoker import InProcessInvoker

if TYPE_CHECKING:
    from perdure.runtime.remote import RemoteInvoker


class Attempts:
    """The node's two invokers behind one face: a partition's actions name no transport."""

    def __init__(self, local: InProcessInvoker, remote: RemoteInvoker) -> None:
        self.local = local
        self.remote = remote

    def start(self, action: StartAttempt) -> None:
        if action.deployment_id is None:
            self.local.start(action)
        else:
            self.remote.start(action)

    def notify(self, action: Notify) -> None:
        self.local.notify(action)
        self.remote.notify(action)

    def abort(self, invocation_id: str) -> None:
        self.local.abort(invocation_id)
        self.remote.abort(invocation_id)

    def busy(self, which: Callable[[str], bool]) -> bool:
        """Whether an attempt of an invocation `which` accepts is computing."""
        for invoker in (self.local, self.remote):
            if any(which(i) and invoker.busy(i) for i in invoker.running()):
                return True
        return False

    def abort_where(self, which: Callable[[str], bool]) -> None:
        """Drop the attempts of the invocations `which` accepts (their partition stopped here)."""
        for invoker in (self.local, self.remote):
            for invocation_id in invoker.running():
                if which(invocation_id):
                    invoker.abort(invocation_id)

    @property
    def all_blocked(self) -> bool:
        """True when no attempt is computing (each waits for a result, or there is none)."""
        return self.local.all_blocked and self.remote.all_blocked

    async def stop(self) -> None:
        await self.local.stop()
        await self.remote.stop()
