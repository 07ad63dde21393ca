"""Awakeable ids in Restate's form: `sign_1` + URL-safe base64 (no padding) of the invocation's raw
id (24 bytes) followed by the signal index (u32, big-endian). The SDK builds them; the runtime
parses them back to (invocation id, signal index)."""

from __future__ import annotations

import base64

from perdure.protocol import ids

PREFIX = "sign_1"


def awakeable_id(raw_invocation_id: bytes, signal: int) -> str:
    data = raw_invocation_id + signal.to_bytes(4, "big")
    return PREFIX + base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parse(awakeable: str) -> tuple[str, int]:
    """(invocation id, signal index); raises ValueError for anything else."""
    if not awakeable.startswith(PREFIX):
        raise ValueError(f"malformed awakeable id {awakeable!r}: expected sign_1…")
    body = awakeable[len(PREFIX) :]
    try:
        data = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (ValueError, TypeError):
        raise ValueError(f"malformed awakeable id {awakeable!r}") from None
    if len(data) != 28:
        raise ValueError(f"malformed awakeable id {awakeable!r}: wrong length")
    invocation = ids.encode(int.from_bytes(data[:8], "big"), data[8:24])
    return invocation, int.from_bytes(data[24:], "big")
