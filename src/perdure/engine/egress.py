"""Kafka egress in the engine: an emitted record enters the partition's outbox with its command.

A handler's `perdure.kafka/emit` send (`perdure.protocol.egress`) is journaled like any send; in
the same transaction its record is stored in the outbox of the partition that applies it, under a
sequence number of that partition, and `EgressPending` asks the runtime producer to produce it.
Replaying the handler replays the journal: the command is not applied again, so nothing is
stored again. What the producer produced (or, after a crash, found already in Kafka) is deleted
by `EgressProduced`, which also moves the producer's checkpoints — see `perdure.kafka.egress`
for why those make each record appear once.

The outbox is the K/V state of the built-in object `perdure.kafka`, key = the partition number:
`next` holds the next sequence number, and each pending record is under its 20-digit sequence
number, so listing the state lists the outbox in emission order (and operators can see it).
"""

from __future__ import annotations

from typing import Any

import msgspec

from perdure.engine import lifecycle
from perdure.engine.actions import EgressPending
from perdure.engine.commands import EgressProduced
from perdure.engine.step import Step
from perdure.protocol import egress as wire
from perdure.protocol import ids
from perdure.protocol import messages as pm
from perdure.storage.api import Invocation, Position

NEXT = b"next"


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """One record to produce, as stored in the outbox (JSON: bytes are base64)."""

    id: str
    topic: str
    value: bytes
    cluster: str | None = None
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = msgspec.field(default_factory=list)


_encode = msgspec.json.Encoder().encode
decode = msgspec.json.Decoder(Record).decode


def stream(partition: int) -> str:
    """The outbox's key (object `perdure.kafka`) for a partition."""
    return str(partition)


def checkpoint_id(partition: int, cluster: str) -> str:
    """Where a partition's checkpoints per (topic, Kafka partition) of `cluster` are stored: the
    offset table, under this pseudo subscription id."""
    return f"egress/{partition}/{cluster}"


def is_record(name: bytes) -> bool:
    return name != NEXT


def accept(step: Step, inv: Invocation, m: Any) -> None:
    """Store the record of an emit command (already journaled); ValueError if it is malformed."""
    if m.invoke_time:
        raise ValueError("perdure.kafka/emit cannot be delayed")
    if m.HasField("idempotency_key"):
        raise ValueError("perdure.kafka/emit takes no idempotency key: records are deduplicated by id")
    cluster, topic = wire.parse_target(m.key)
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = []
    for h in m.headers:
        if h.key == wire.KEY_HEADER:
            key = wire.decode_key(h.value)
        else:
            headers.append((h.key, h.value.encode()))
    record_id = ids.child_id(inv.id, inv.command_count - 1, wire.SERVICE, m.key)
    headers.append((wire.RECORD_ID_HEADER, record_id.encode()))
    partition = step.partitioning.partition_of(inv.id)
    txn, name = step.txn, stream(partition)
    raw = txn.get_state(wire.SERVICE, name, NEXT)
    seq = int(raw) if raw else 0
    txn.set_state(wire.SERVICE, name, NEXT, str(seq + 1).encode())
    record = Record(id=record_id, topic=topic, value=m.parameter, cluster=cluster, key=key, headers=headers)
    txn.set_state(wire.SERVICE, name, f"{seq:020d}".encode(), _encode(record))
    idx = m.invocation_id_notification_idx
    lifecycle.notify(
        step, inv, pm.CallInvocationIdCompletion(completion_id=idx, invocation_id=record_id), idx
    )
    if EgressPending(partition) not in step.actions:
        step.actions.append(EgressPending(partition))


def produced(step: Step, cmd: EgressProduced) -> None:
    """Forget records that are in Kafka, and store the producer's new checkpoints."""
    txn, name = step.txn, stream(cmd.partition)
    for record in cmd.names:
        txn.clear_state(wire.SERVICE, name, record)
    for (cluster, topic, kafka_partition), offset in cmd.marks.items():
        txn.set_offset(checkpoint_id(cmd.partition, cluster), topic, kafka_partition, Position(offset))
