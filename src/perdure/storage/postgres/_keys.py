"""How user text is keyed in PostgreSQL: UTF-8 bytes, and fixed-size keys for long ones.

A btree entry holds at most ~2.7 KB, while object keys and state names may be longer (64 KiB and
more are fine): tables are keyed by `skey`, a 16-byte hash of (service, key), and `nkey`, the state
name itself when short or its hash when long (a leading byte tells which, so the two never meet).
Reads compare the stored service and key too, so even a hash collision cannot mix two keys.
"""

from __future__ import annotations

import hashlib

_SHORT = 64


def text(value: str) -> bytes:
    return value.encode()


def skey(service: str, key: str) -> bytes:
    s, k = service.encode(), key.encode()
    h = hashlib.blake2b(digest_size=16)
    h.update(len(s).to_bytes(4, "big"))
    h.update(s)
    h.update(k)
    return h.digest()


def nkey(name: bytes) -> bytes:
    if len(name) <= _SHORT:
        return b"\x00" + name
    return b"\x01" + hashlib.blake2b(name, digest_size=16).digest()
