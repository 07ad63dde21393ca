"""Kafka egress on the wire: a one-way send to the built-in `perdure.kafka/emit` handler.

`ctx.emit(topic, value, key=…, headers=…)` journals a `OneWayCallCommand` like any send, so any
SDK that speaks Restate's protocol can emit (the official one with `ctx.generic_send`):

| send field | record |
|---|---|
| service / handler | `perdure.kafka` / `emit` |
| key | `TOPIC`, or `CLUSTER/TOPIC` (a topic never contains `/`) |
| parameter | the value, as is |
| header `kafka.key` | the record key, URL-safe base64 with padding (the same form as the header a
  subscription passes in); absent: no key |
| other headers | the record's headers (values UTF-8) |

The engine does not create an invocation: it stores the record in the emitting partition's egress
outbox in the same transaction as the command, and `perdure.kafka.egress` produces it after the
commit. The send's invocation id is the record's id, `RECORD_ID_HEADER` on the produced record.
"""

from __future__ import annotations

import base64
import binascii
import re

SERVICE = "perdure.kafka"
HANDLER = "emit"
KEY_HEADER = "kafka.key"
#: Carried by every produced record: its id, fixed by (emitting invocation, journal command index).
RECORD_ID_HEADER = "perdure.egress.id"

_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


def target(topic: str, cluster: str | None = None) -> str:
    """The send's key for `topic` (on `cluster`, else the one configured cluster); ValueError if bad."""
    if not _TOPIC.fullmatch(topic):
        raise ValueError(f"not a Kafka topic name: {topic!r} (letters, digits, '.', '_', '-')")
    if cluster is not None and (not cluster or "/" in cluster):
        raise ValueError(f"not a Kafka cluster name: {cluster!r}")
    return topic if cluster is None else f"{cluster}/{topic}"


def parse_target(key: str) -> tuple[str | None, str]:
    """A send's key → (cluster or None, topic); ValueError if it names no topic."""
    cluster, _, topic = key.rpartition("/")
    if not _TOPIC.fullmatch(topic) or "/" in cluster:
        raise ValueError(f"perdure.kafka/emit needs the key TOPIC or CLUSTER/TOPIC, not {key!r}")
    return cluster or None, topic


def encode_key(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode()


def decode_key(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text.encode())
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"header {KEY_HEADER} must be URL-safe base64: {e}") from e
