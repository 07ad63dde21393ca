"""Kafka records in: each record becomes exactly one invocation.

The next offset of (subscription, topic, partition) is stored in the same transaction as the
invocations created from the records before it, so a crash can never lose a record or ingest one
twice: the consumer seeks back to the stored offset, and records below it are skipped here.
Invocation ids are derived from (subscription, topic, partition, offset), a second guard — except
a workflow's run, whose id comes from its key as for every other submission (one run per key).
"""

from __future__ import annotations

import base64
import hashlib

from perdure.engine import lifecycle
from perdure.engine.commands import Ingest, Invoke, KafkaRecord, ResetOffset
from perdure.engine.registry import Registry
from perdure.engine.step import Step
from perdure.protocol import ids
from perdure.storage.api import Failure, Position, Subscription

SERVICE_SCHEME = "service://"


def sink_target(subscription: Subscription) -> tuple[str, str]:
    """(service, handler) of a `service://SVC/HANDLER` sink."""
    service, _, handler = subscription.sink.removeprefix(SERVICE_SCHEME).partition("/")
    return service, handler


def object_key(key: bytes) -> str:
    """A record key as an object key: UTF-8 text, or URL-safe base64 of keys that are not UTF-8."""
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return base64.urlsafe_b64encode(key).decode()


def record_id(
    subscription_id: str,
    topic: str,
    partition: int,
    offset: int,
    service: str,
    key: str | None,
    epoch: int = 0,
) -> str:
    """Derived from where the record is (and the partition's epoch after a reset): a record re-read
    after a crash or a rebalance maps to the invocation it already has."""
    name = f"{subscription_id}\0{topic}\0{partition}\0{offset}" + (f"\0{epoch}" if epoch else "")
    digest = hashlib.blake2b(name.encode(), digest_size=16).digest()
    if key is None:
        return ids.encode(int.from_bytes(digest[:8], "big"), digest)
    return ids.encode(ids.partition_key(service, key), digest)


def headers(subscription_id: str, topic: str, partition: int, record: KafkaRecord) -> list[tuple[str, str]]:
    """What the handler sees in `ctx.request().headers`: Restate's kafka.* headers, then the record's own.

    Record header values that are not UTF-8 are passed as `base64:` + URL-safe base64.
    """
    out = [
        ("kafka.topic", topic),
        ("kafka.partition", str(partition)),
        ("kafka.offset", str(record.offset)),
        ("kafka.timestamp", str(record.timestamp)),
        ("restate.subscription.id", subscription_id),
    ]
    if record.key is not None:
        out.append(("kafka.key", base64.urlsafe_b64encode(record.key).decode()))
    for name, value in record.headers:
        try:
            out.append((name, value.decode("utf-8")))
        except UnicodeDecodeError:
            out.append((name, "base64:" + base64.urlsafe_b64encode(value).decode()))
    return out


def plan(
    cmd: Ingest, registry: Registry, position: Position | None
) -> tuple[list[tuple[int, Invoke]], Position | None]:
    """The invocations `cmd`'s records become, by offset, given the stored position (records below it
    were ingested before: skipped), and the position after them (None: nothing stored nor consumed)."""
    service, _, handler = cmd.sink.removeprefix(SERVICE_SCHEME).partition("/")
    info = registry.get(service, handler)
    keyed = info is not None and info.keyed
    next_offset = position.next_offset if position is not None else None
    epoch = position.epoch if position is not None else 0
    invokes = []
    for record in cmd.records:
        if next_offset is not None and record.offset < next_offset:
            continue  # already ingested (re-read after a crash or rebalance)
        where = f"{cmd.topic}/{cmd.partition}/{record.offset}"
        failure = cmd.rejected.get(record.offset)
        raw_key = record.key if record.key is not None or cmd.key_missing != "empty" else b""
        key = object_key(raw_key) if keyed and raw_key is not None else None
        queue_key = None
        if not keyed and cmd.ordering == "key" and record.key is not None:
            queue_key = object_key(record.key)  # a service sink's records, FIFO per Kafka key
        if failure is None and keyed and key is None:
            failure = Failure(400, f"record {where} has no key, but {service}/{handler} is keyed by it")
        if info is not None and info.workflow_run and key is not None:
            # A workflow runs once per key: a later record with the key joins the first one's run.
            invocation_id = ids.workflow_id(service, key)
        else:
            invocation_id = record_id(
                cmd.subscription_id,
                cmd.topic,
                cmd.partition,
                record.offset,
                service,
                key if key is not None else queue_key,
                epoch,
            )
        invokes.append((
            record.offset,
            Invoke(
                invocation_id=invocation_id,
                service=service,
                handler=handler,
                key=key if keyed else None,
                input=record.value or b"",
                headers=headers(cmd.subscription_id, cmd.topic, cmd.partition, record),
                failure=failure,
                on_failure=None if cmd.on_failure == "block" else cmd.on_failure,
                queue_key=queue_key,
            ),
        ))  # fmt: skip
        next_offset = record.offset + 1
    return invokes, None if next_offset is None else Position(next_offset, epoch)


def ingest(step: Step, cmd: Ingest) -> None:
    position = step.txn.get_offset(cmd.subscription_id, cmd.topic, cmd.partition)
    invokes, after = plan(cmd, step.registry, position)
    for _, invoke in invokes:
        lifecycle.invoke(step, invoke)
    if after is not None:
        step.txn.set_offset(cmd.subscription_id, cmd.topic, cmd.partition, after)


def reset_offset(step: Step, cmd: ResetOffset) -> None:
    """The partition's log restarted below the stored offset: continue from `next_offset`, new epoch."""
    current = step.txn.get_offset(cmd.subscription_id, cmd.topic, cmd.partition)
    epoch = current.epoch + 1 if current is not None else 0
    step.txn.set_offset(cmd.subscription_id, cmd.topic, cmd.partition, Position(cmd.next_offset, epoch))
