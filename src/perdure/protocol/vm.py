"""The SDK-side state machine of one attempt: sans-I/O, messages in, messages out.

A `VM` is built from the attempt's `StartMessage` and the journal entries that follow it. The
handler's context calls the `sys_*` methods; each produces a command. While journal commands
remain unconsumed the VM is *replaying*: a new command must match the recorded one (same type
and identity fields) or the attempt fails with a `JournalMismatchError` (protocol code 570), and
the recorded results are returned instead of being recomputed. After that the VM is
*processing*: commands go to `take_output()` for the runtime to journal.

Results arrive as notifications (`notify`). Each is tagged with its arrival order, which is the
journal order on replay too, so races (`select`) resolve the same way every time.

Handles name what a future waits for: a completion id is a positive int, signal `n` is `-n`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any, NamedTuple

from perdure.errors import JournalMismatchError
from perdure.protocol import messages as pm
from perdure.protocol.codec import ProtocolError, RawMessage, message_type

#: Fields that identify a command when matching a replayed journal; absent types compare whole.
#: Times (sleep wake-up, send invoke time) are computed from the clock and so are not compared.
_IDENTITY: dict[int, tuple[str, ...]] = {
    pm.TYPE_OF[pm.RunCommand]: ("name",),
    pm.TYPE_OF[pm.SleepCommand]: ("name",),
    pm.TYPE_OF[pm.CallCommand]: ("service_name", "handler_name", "key", "parameter", "idempotency_key"),
    pm.TYPE_OF[pm.OneWayCallCommand]: ("service_name", "handler_name", "key", "parameter", "idempotency_key"),
    pm.TYPE_OF[pm.SetStateCommand]: ("key", "value"),
    pm.TYPE_OF[pm.ClearStateCommand]: ("key",),
    pm.TYPE_OF[pm.ClearAllStateCommand]: (),
    pm.TYPE_OF[pm.GetEagerStateCommand]: ("key",),
    pm.TYPE_OF[pm.GetLazyStateCommand]: ("key",),
    pm.TYPE_OF[pm.GetEagerStateKeysCommand]: (),
    pm.TYPE_OF[pm.GetLazyStateKeysCommand]: (),
    pm.TYPE_OF[pm.SendSignalCommand]: ("target_invocation_id", "idx"),
    pm.TYPE_OF[pm.CompleteAwakeableCommand]: ("awakeable_id",),
    pm.TYPE_OF[pm.GetPromiseCommand]: ("key",),
    pm.TYPE_OF[pm.PeekPromiseCommand]: ("key",),
    pm.TYPE_OF[pm.CompletePromiseCommand]: ("key",),
}

# Reading state may be recorded eagerly or lazily depending on what the runtime sent; on replay
# either form satisfies a read of the same key.
_GET_STATE = {pm.TYPE_OF[pm.GetEagerStateCommand], pm.TYPE_OF[pm.GetLazyStateCommand]}
_GET_KEYS = {pm.TYPE_OF[pm.GetEagerStateKeysCommand], pm.TYPE_OF[pm.GetLazyStateKeysCommand]}

_SIGNAL = pm.TYPE_OF[pm.SignalNotification]
_RUN_ACK = pm.TYPE_OF[pm.ProposeRunCompletionAckMessage]
_INPUT = pm.TYPE_OF[pm.InputCommand]


class Read(NamedTuple):
    """A state read: either `handle` to await (lazy), or the `value` now (None when absent)."""

    handle: int | None
    value: bytes | None


def describe(message: Any) -> str:
    """A short human description of a command, for errors and tools."""
    code = message_type(message)
    name = pm.NAME_OF.get(code, f"custom command 0x{code:04x}")
    if isinstance(message, RawMessage):
        return name
    fields = _IDENTITY.get(code)
    shown = []
    for field, value in message.ListFields():
        if fields is not None and field.name not in fields:
            continue
        if field.name in ("result_completion_id", "invocation_id_notification_idx"):
            continue
        text = repr(value)
        shown.append(f"{field.name}={text if len(text) <= 60 else text[:57] + '...'}")
    return f"{name}({', '.join(shown)})"


def _same(code: int, recorded: Any, new: Any) -> bool:
    fields = _IDENTITY.get(code)
    if fields is None:
        return bool(recorded.SerializeToString() == new.SerializeToString())
    for field in fields:
        if field == "idempotency_key" and recorded.HasField(field) != new.HasField(field):
            return False
        if getattr(recorded, field) != getattr(new, field):
            return False
    return True


class VM:
    """Drives one attempt of one handler against its journal."""

    def __init__(self, start: Any, journal: Sequence[Any], *, handler: str, version: int = 6) -> None:
        if not journal or message_type(journal[0]) != _INPUT:
            raise ProtocolError("the journal must start with an InputCommand")
        self.handler = handler
        self.version = version
        self.start = start
        self.input = journal[0]
        self.state: dict[bytes, bytes | None] = {e.key: e.value for e in start.state_map}
        self.partial_state: bool = start.partial_state
        self._replay: deque[Any] = deque()
        self._results: dict[int, Any] = {}
        self._arrival: dict[int, int] = {}
        self._seq = 0
        self._proposed: dict[int, Any] = {}
        self._sleeps: dict[int, int] = {}
        self._output: list[Any] = []
        self._next_completion = 1
        self._next_signal = pm.FIRST_AWAKEABLE_SIGNAL
        self.calls: dict[int, int] = {}  # call result handle -> its invocation-id handle
        self.command_index = 0  # the InputCommand is command 0
        self.finished = False
        for entry in journal[1:]:
            code = message_type(entry)
            if pm.is_notification(code):
                self.notify(entry)
            else:
                self._replay.append(entry)

    # ---- introspection

    @property
    def replaying(self) -> bool:
        return bool(self._replay)

    @property
    def key(self) -> str:
        return str(self.start.key)

    @property
    def invocation_id(self) -> str:
        return str(self.start.debug_id)

    def take_output(self) -> list[Any]:
        out, self._output = self._output, []
        return out

    def is_ready(self, handle: int) -> bool:
        return handle in self._results

    def result(self, handle: int) -> Any:
        """The notification that completed `handle` (must be ready)."""
        return self._results[handle]

    def arrival(self, handle: int) -> int:
        """Position of `handle`'s notification in the order results arrived."""
        return self._arrival[handle]

    def sleep_deadline(self, handle: int) -> int | None:
        """Wake-up time (ms) when `handle` is a sleep, else None."""
        return self._sleeps.get(handle)

    def is_pending_run(self, handle: int) -> bool:
        """True while a proposed `ctx.run` result waits to be stored by the runtime."""
        return handle in self._proposed and handle not in self._results

    # ---- commands

    def _command(self, message: Any) -> Any:
        """Record a new command, or match it against the journal; returns the recorded one."""
        if self.finished:
            raise ProtocolError("the attempt has already ended")
        self.command_index += 1
        if not self._replay:
            self._output.append(message)
            return message
        recorded = self._replay[0]
        code, recorded_code = message_type(message), message_type(recorded)
        compatible = code == recorded_code or (
            {code, recorded_code} <= _GET_STATE or {code, recorded_code} <= _GET_KEYS
        )
        if not compatible or not _same(recorded_code if code != recorded_code else code, recorded, message):
            raise JournalMismatchError(
                self.handler, self.command_index, describe(recorded), describe(message)
            )
        self._replay.popleft()
        return recorded

    def _completion_id(self) -> int:
        cid = self._next_completion
        self._next_completion += 1
        return cid

    def _check_id(self, recorded: Any, field: str, expected: int) -> None:
        if getattr(recorded, field) != expected:
            raise JournalMismatchError(
                self.handler,
                self.command_index,
                f"{describe(recorded)} with {field}={getattr(recorded, field)}",
                f"{field}={expected}",
            )

    def sys_run(self, name: str) -> int:
        cid = self._completion_id()
        recorded = self._command(pm.RunCommand(result_completion_id=cid, name=name))
        self._check_id(recorded, "result_completion_id", cid)
        return cid

    def propose_run(self, handle: int, value: bytes | None = None, failure: Any = None) -> None:
        """Hand a `ctx.run` result to the runtime; it becomes the handle's result once stored."""
        if failure is not None:
            message = pm.ProposeRunCompletionMessage(result_completion_id=handle, failure=failure)
        else:
            message = pm.ProposeRunCompletionMessage(result_completion_id=handle, value=value or b"")
        self._proposed[handle] = message
        self._output.append(message)

    def sys_sleep(self, wake_up_time: int, name: str = "") -> int:
        cid = self._completion_id()
        recorded = self._command(
            pm.SleepCommand(wake_up_time=wake_up_time, result_completion_id=cid, name=name)
        )
        self._check_id(recorded, "result_completion_id", cid)
        self._sleeps[cid] = recorded.wake_up_time
        return cid

    def sys_call(
        self,
        service: str,
        handler: str,
        parameter: bytes,
        *,
        key: str = "",
        headers: Sequence[tuple[str, str]] = (),
        idempotency_key: str | None = None,
        name: str = "",
    ) -> tuple[int, int]:
        """A request/response call: returns (invocation-id handle, result handle)."""
        id_handle, result_handle = self._completion_id(), self._completion_id()
        message = pm.CallCommand(
            service_name=service,
            handler_name=handler,
            parameter=parameter,
            key=key,
            headers=[pm.Header(key=k, value=v) for k, v in headers],
            invocation_id_notification_idx=id_handle,
            result_completion_id=result_handle,
            name=name,
        )
        if idempotency_key is not None:
            message.idempotency_key = idempotency_key
        recorded = self._command(message)
        self._check_id(recorded, "invocation_id_notification_idx", id_handle)
        self.calls[result_handle] = id_handle
        return id_handle, result_handle

    def sys_send(
        self,
        service: str,
        handler: str,
        parameter: bytes,
        *,
        key: str = "",
        headers: Sequence[tuple[str, str]] = (),
        idempotency_key: str | None = None,
        invoke_time: int = 0,
        name: str = "",
    ) -> int:
        """A one-way send, delayed until `invoke_time` (ms) if set: returns the id handle."""
        id_handle = self._completion_id()
        message = pm.OneWayCallCommand(
            service_name=service,
            handler_name=handler,
            parameter=parameter,
            key=key,
            headers=[pm.Header(key=k, value=v) for k, v in headers],
            invoke_time=invoke_time,
            invocation_id_notification_idx=id_handle,
            name=name,
        )
        if idempotency_key is not None:
            message.idempotency_key = idempotency_key
        recorded = self._command(message)
        self._check_id(recorded, "invocation_id_notification_idx", id_handle)
        return id_handle

    def sys_get_state(self, key: bytes) -> Read:
        if self._replay:
            recorded = self._replay[0]
            if message_type(recorded) == pm.TYPE_OF[pm.GetLazyStateCommand]:
                cid = self._completion_id()
                recorded = self._command(pm.GetLazyStateCommand(key=key, result_completion_id=cid))
                self._check_id(recorded, "result_completion_id", cid)
                return Read(cid, None)
            recorded = self._command(pm.GetEagerStateCommand(key=key))
            if message_type(recorded) == pm.TYPE_OF[pm.GetEagerStateCommand]:
                return Read(None, recorded.value.content if recorded.HasField("value") else None)
            raise ProtocolError("unreachable: state command matched a non-state entry")
        if key in self.state or not self.partial_state:
            value = self.state.get(key)
            if value is None:
                self._command(pm.GetEagerStateCommand(key=key, void=pm.Void()))
            else:
                self._command(pm.GetEagerStateCommand(key=key, value=pm.Value(content=value)))
            return Read(None, value)
        cid = self._completion_id()
        self._command(pm.GetLazyStateCommand(key=key, result_completion_id=cid))
        return Read(cid, None)

    def sys_state_keys(self) -> tuple[int | None, list[bytes]]:
        """State keys now (handle None), or a handle to await when state is partial."""
        lazy = self.partial_state
        if self._replay:
            lazy = message_type(self._replay[0]) == pm.TYPE_OF[pm.GetLazyStateKeysCommand]
        if lazy:
            cid = self._completion_id()
            recorded = self._command(pm.GetLazyStateKeysCommand(result_completion_id=cid))
            self._check_id(recorded, "result_completion_id", cid)
            return cid, []
        keys = sorted(k for k, v in self.state.items() if v is not None)
        recorded = self._command(pm.GetEagerStateKeysCommand(value=pm.StateKeys(keys=keys)))
        return None, list(recorded.value.keys)

    def sys_set_state(self, key: bytes, value: bytes) -> None:
        self._command(pm.SetStateCommand(key=key, value=pm.Value(content=value)))
        self.state[key] = value

    def sys_clear_state(self, key: bytes) -> None:
        self._command(pm.ClearStateCommand(key=key))
        self.state[key] = None

    def sys_clear_all_state(self) -> None:
        self._command(pm.ClearAllStateCommand())
        self.state = {}
        self.partial_state = False

    def sys_output(self, value: bytes | None = None, failure: Any = None) -> None:
        if failure is not None:
            self._command(pm.OutputCommand(failure=failure))
        else:
            self._command(pm.OutputCommand(value=pm.Value(content=value or b"")))

    def sys_end(self) -> None:
        self._output.append(pm.EndMessage())
        self.finished = True

    def sys_get_promise(self, name: str) -> int:
        cid = self._completion_id()
        recorded = self._command(pm.GetPromiseCommand(key=name, result_completion_id=cid))
        self._check_id(recorded, "result_completion_id", cid)
        return cid

    def sys_peek_promise(self, name: str) -> int:
        cid = self._completion_id()
        recorded = self._command(pm.PeekPromiseCommand(key=name, result_completion_id=cid))
        self._check_id(recorded, "result_completion_id", cid)
        return cid

    def sys_complete_promise(self, name: str, *, value: bytes | None = None, failure: Any = None) -> int:
        cid = self._completion_id()
        message = pm.CompletePromiseCommand(key=name, result_completion_id=cid)
        if failure is not None:
            message.completion_failure.CopyFrom(failure)
        else:
            message.completion_value.content = value or b""
        recorded = self._command(message)
        self._check_id(recorded, "result_completion_id", cid)
        return cid

    def new_signal(self) -> int:
        """Reserve a signal index (awakeables); not journaled. Returns its handle."""
        idx = self._next_signal
        self._next_signal += 1
        return -idx

    def sys_send_signal(
        self, target_invocation_id: str, idx: int, *, value: bytes | None = None, failure: Any = None
    ) -> None:
        """Signal another invocation (idx 1 = CANCEL); a journaled command."""
        message = pm.SendSignalCommand(target_invocation_id=target_invocation_id, idx=idx)
        if failure is not None:
            message.failure.CopyFrom(failure)
        elif value is not None:
            message.value.content = value
        else:
            message.void.SetInParent()
        self._command(message)

    def sys_complete_awakeable(
        self, awakeable_id: str, *, value: bytes | None = None, failure: Any = None
    ) -> None:
        message = pm.CompleteAwakeableCommand(awakeable_id=awakeable_id)
        if failure is not None:
            message.failure.CopyFrom(failure)
        else:
            message.value.content = value or b""
        self._command(message)

    # ---- ending an attempt without a result

    def suspend(self, handles: Sequence[int]) -> None:
        """End the attempt waiting for any of `handles` (plus CANCEL)."""
        completions = sorted({h for h in handles if h > 0})
        signals = sorted({-h for h in handles if h < 0} | {pm.CANCEL_SIGNAL})
        if not completions and signals == [pm.CANCEL_SIGNAL] and not handles:
            raise ProtocolError("cannot suspend waiting on nothing")
        if self.version >= 7:
            message = pm.SuspensionMessage(
                awaiting_on=pm.Future(
                    waiting_completions=completions, waiting_signals=signals, combinator_type=1
                )
            )
        else:
            message = pm.SuspensionMessage(waiting_completions=completions, waiting_signals=signals)
        self._output.append(message)
        self.finished = True

    def fail(
        self, code: int, message: str, *, stacktrace: str = "", next_retry_delay: int | None = None
    ) -> None:
        """End the attempt with a retryable error."""
        error = pm.ErrorMessage(code=code, message=message, stacktrace=stacktrace)
        error.related_command_index = self.command_index
        if next_retry_delay is not None:
            error.next_retry_delay = next_retry_delay
        self._output.append(error)
        self.finished = True

    # ---- notifications

    def notify(self, message: Any) -> None:
        """Take a notification (or a V7 run ack) from the runtime."""
        code = message_type(message)
        if code == _RUN_ACK:
            proposal = self._proposed.get(message.completion_id)
            if proposal is None:
                raise ProtocolError(f"ack for unknown run completion {message.completion_id}")
            result = pm.RunCompletion(completion_id=message.completion_id)
            if proposal.HasField("failure"):
                result.failure.CopyFrom(proposal.failure)
            else:
                result.value.content = proposal.value
            message = result
            handle = result.completion_id
        elif code == _SIGNAL:
            if message.WhichOneof("signal_id") != "idx":
                return  # named signals are not used by this SDK
            handle = -message.idx
        elif pm.is_notification(code):
            handle = message.completion_id
        else:
            raise ProtocolError(f"expected a notification, got {pm.NAME_OF.get(code, hex(code))}")
        if handle in self._results:
            return
        self._results[handle] = message
        self._arrival[handle] = self._seq
        self._seq += 1
        self._proposed.pop(handle, None)
