"""Invocation ids in Restate's exact form: `inv_1` + base62(u64 partition key) + base62(u128 uuid),
each number byte-swapped (restate-server encodes `to_be()` of the integer on a little-endian
machine) and written most significant digit first over Restate's alphabet `0-9a-zA-Z`, zero-padded
to 11 and 22 digits. Restate's CLI decodes ids, so any other encoding breaks it.

The raw form (`StartMessage.id`) is 24 bytes: 8 of partition key, 16 of uuid. Keyed targets
take their partition key from a hash of (service, key), so every invocation of one key lands on
the same partition. Ids derived from content (idempotency keys, a parent's call index) are
deterministic, which is what makes retries of the same request land on the same invocation.
"""

from __future__ import annotations

import hashlib
import os

PREFIX = "inv_1"
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"  # Restate's base62
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
_KEY_WIDTH, _UUID_WIDTH = 11, 22
LENGTH = len(PREFIX) + _KEY_WIDTH + _UUID_WIDTH


_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # two digits at a time: 62**2 entries


def base62(value: int, width: int) -> str:
    pairs = []
    for _ in range(width // 2):
        value, rem = divmod(value, 3844)
        pairs.append(_PAIRS[rem])
    if width % 2:
        pairs.append(_ALPHABET[value % 62])
    return "".join(reversed(pairs))


def _digest(*parts: str | bytes, size: int) -> bytes:
    h = hashlib.blake2b(digest_size=size)
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(4, "big"))
        h.update(data)
    return h.digest()


def partition_key(service: str, key: str | None) -> int:
    """Keyed targets hash to a stable partition key; unkeyed ones get a random one."""
    if key is None:
        return int.from_bytes(os.urandom(8), "big")
    return int.from_bytes(_digest(service, key, size=8), "big")


def _swapped(value: int, size: int) -> int:
    return int.from_bytes(value.to_bytes(size, "big"), "little")


def encode(partition: int, uuid: bytes) -> str:
    return (
        PREFIX
        + base62(_swapped(partition, 8), _KEY_WIDTH)
        + base62(int.from_bytes(uuid, "little"), _UUID_WIDTH)
    )


def to_bytes(invocation_id: str) -> bytes:
    """The 24-byte raw form; raises ValueError for a malformed id."""
    if len(invocation_id) != LENGTH or not invocation_id.startswith(PREFIX):
        raise ValueError(
            f"malformed invocation id {invocation_id!r}: expected inv_1 followed by 33 base62 chars"
        )
    try:
        digits = [_INDEX[c] for c in invocation_id[len(PREFIX) :]]
    except KeyError as e:
        raise ValueError(f"malformed invocation id {invocation_id!r}: bad character {e}") from None
    partition = 0
    for d in digits[:_KEY_WIDTH]:
        partition = partition * 62 + d
    uuid = 0
    for d in digits[_KEY_WIDTH:]:
        uuid = uuid * 62 + d
    if partition >= 1 << 64 or uuid >= 1 << 128:
        raise ValueError(f"malformed invocation id {invocation_id!r}: out of range")
    return partition.to_bytes(8, "little") + uuid.to_bytes(16, "little")


def is_valid(invocation_id: str) -> bool:
    try:
        to_bytes(invocation_id)
    except ValueError:
        return False
    return True


def random_id(service: str, key: str | None) -> str:
    return encode(partition_key(service, key), os.urandom(16))


def idempotent_id(service: str, handler: str, key: str | None, idempotency_key: str) -> str:
    """The same request (target + idempotency key) always maps to the same invocation."""
    uuid = _digest("idem", service, handler, key or "", idempotency_key, size=16)
    if key is None:
        return encode(int.from_bytes(_digest(service, handler, idempotency_key, size=8), "big"), uuid)
    return encode(partition_key(service, key), uuid)


def workflow_id(workflow: str, key: str) -> str:
    """A workflow's run: one invocation per (workflow, key), however often it is submitted."""
    return encode(partition_key(workflow, key), _digest("workflow", workflow, key, size=16))


def child_id(parent: str, command_index: int, service: str, key: str | None) -> str:
    """The invocation a parent's call/send creates: fixed by (parent, command index)."""
    uuid = _digest("child", parent, str(command_index), size=16)
    if key is None:
        return encode(int.from_bytes(uuid[:8], "big"), uuid)
    return encode(partition_key(service, key), uuid)


def partition_key_of(invocation_id: str) -> int:
    """The partition key an id carries (0 for a malformed id: such ids are refused elsewhere)."""
    key = 0
    try:
        for c in invocation_id[len(PREFIX) : len(PREFIX) + _KEY_WIDTH]:
            key = key * 62 + _INDEX[c]
    except KeyError:
        return 0
    return _swapped(key, 8) if key < 1 << 64 else 0


def partition_of(invocation_id: str, partitions: int) -> int:
    """The partition (of `partitions`) that owns an invocation: its partition key modulo the count."""
    return partition_key_of(invocation_id) % partitions


def resource_id(prefix: str, ulid: bytes) -> str:
    """A ULID-backed id as restate-server writes it (`dp_1…` deployments): prefix, version `1`,
    then the 16 bytes as one little-endian u128 in base62 over `0-9a-zA-Z`, zero-padded to 22.
    Restate's CLI decodes these ids, so perdure's must have this exact form."""
    return f"{prefix}_1" + base62(int.from_bytes(ulid, "little"), 22)
