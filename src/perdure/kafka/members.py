"""Remembering each subscription's consumer-group member, to leave it after a crash.

A consumer killed without leaving its group stays a member until its session expires (6 s by
default), and the broker holds the new consumer's join until then. At start, a consumer whose
previous member id is remembered asks the group coordinator to drop that member first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("perdure.kafka")


class MemberFile:
    """group id -> member id, in a small JSON file next to the engine's database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._members: dict[str, str] = json.loads(path.read_text())
        except (OSError, ValueError):
            self._members = {}

    def get(self, group_id: str) -> str | None:
        return self._members.get(group_id)

    def remember(self, group_id: str, member_id: str) -> None:
        if member_id and self._members.get(group_id) != member_id:
            self._members[group_id] = member_id
            self._write()

    def forget(self, group_id: str) -> None:
        if self._members.pop(group_id, None) is not None:
            self._write()

    def _write(self) -> None:
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        try:
            tmp.write_text(json.dumps(self._members))
            os.replace(tmp, self.path)
        except OSError as e:  # only a slower restart is at stake
            log.debug("cannot remember kafka group members in %s: %s", self.path, e)


async def leave(kwargs: dict[str, Any], group_id: str, member_id: str) -> None:
    """Ask the group's coordinator to drop a member left behind by a crash (best effort)."""
    from aiokafka.client import (  # type: ignore[import-untyped]
        AIOKafkaClient,
        ConnectionGroup,
        CoordinationType,
    )
    from aiokafka.protocol.group import LeaveGroupRequest  # type: ignore[import-untyped]

    client = AIOKafkaClient(bootstrap_servers=kwargs["bootstrap_servers"])
    try:
        async with asyncio.timeout(2):
            await client.bootstrap()
            node = await client.coordinator_lookup(CoordinationType.GROUP, group_id)
            request = LeaveGroupRequest(group_id, member_id)
            await client.send(node, request, group=ConnectionGroup.COORDINATION)
    except Exception as e:
        log.debug("kafka group %s: could not drop the old member %s: %s", group_id, member_id, e)
    finally:
        with contextlib.suppress(Exception):
            await client.close()
