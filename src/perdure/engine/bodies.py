"""What travels between partitions: the bodies of deliveries (DESIGN.md §7, outbox → inbox).

An effect of one partition's command on an invocation another partition owns — a call or send, a
result back to a caller, an attach, a signal or awakeable, a cancel or kill cascade, a control, a
Kafka record or an ingress submission that arrived at another node — is written as one of these in
the sender's transaction and applied by the owner (`engine.deliveries`), exactly once.
"""

from __future__ import annotations

import msgspec

from perdure.storage.api import Caller, Failure


class _Body(msgspec.Struct, tag_field="kind"):
    invocation_id: str  # whose partition the body goes to


class Invoked(_Body, tag="invoke", kw_only=True):
    """Create an invocation (`commands.Invoke`'s fields)."""

    invocation_id: str
    service: str
    handler: str
    key: str | None
    input: bytes
    headers: list[tuple[str, str]] = msgspec.field(default_factory=list)
    idempotency_key: str | None = None
    caller: Caller | None = None
    execute_at: int | None = None
    failure: Failure | None = None
    on_failure: str | None = None
    queue_key: str | None = None
    # A random id the sender just generated (an ingress submission): the owner need not look it
    # up. Absent from bodies stored before the field existed, which then decode as not fresh.
    fresh: bool = False


class Notified(_Body, tag="notify"):
    """Append a notification (a call's or an attach's result) to an invocation's journal."""

    invocation_id: str
    type: int  # the protocol message type
    payload: bytes
    handle: int | str  # completion id, minus the signal index, or the signal's name


class Signaled(_Body, tag="signal"):
    """Complete a signal of an invocation (an awakeable, a named signal)."""

    invocation_id: str
    idx: int | str
    value: bytes | None = None
    failure: Failure | None = None


class Stopped(_Body, tag="stop"):
    """Cancel (or, with `kill`, kill) an invocation, as a cascade does: a finished one is left alone."""

    invocation_id: str
    kill: bool = False


class Attached(_Body, tag="attach"):
    """`caller` waits for the invocation's result (`caller.attach`), or asks for it now (`peek`)."""

    invocation_id: str
    caller: Caller
    peek: bool = False


class Controlled(_Body, tag="control"):
    """An operator's resume, pause or purge that reached a node which does not own the invocation."""

    invocation_id: str
    verb: str  # "resume" | "pause" | "purge" | "redrive" | "discard"


Body = Invoked | Notified | Signaled | Stopped | Attached | Controlled

encode = msgspec.msgpack.Encoder().encode
decode = msgspec.msgpack.Decoder(Body).decode
