"""The reserved system object: its state holds workflow promises. User services may not use its name."""

from __future__ import annotations

SYSTEM = "__perdure"


def promises_key(workflow: str, key: str) -> str:
    """Where a workflow key's promises live (see `engine.promises`)."""
    return f"promises/{workflow}/{key}"
