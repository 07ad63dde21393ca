"""Invocation and deployment ids in restate-server's exact encoding (Restate's CLI decodes them)."""

from __future__ import annotations

import os

from perdure.protocol import ids

# Written by restate-server 1.7.12 (`sys_journal`: id and partition_key of one invocation).
RESTATE_ID = "inv_12dm1rztttCm4ZwWeCKrWRJlzzEqdYlZCW"
RESTATE_PARTITION_KEY = 9668785369086217497


def test_an_id_written_by_restate_server_decodes_to_its_partition_key_and_back() -> None:
    assert ids.partition_key_of(RESTATE_ID) == RESTATE_PARTITION_KEY
    raw = ids.to_bytes(RESTATE_ID)
    assert raw[:8] == RESTATE_PARTITION_KEY.to_bytes(8, "big")
    assert ids.encode(int.from_bytes(raw[:8], "big"), raw[8:]) == RESTATE_ID


def test_every_id_round_trips_including_extreme_values() -> None:
    for partition, uuid in [(0, bytes(16)), ((1 << 64) - 1, b"\xff" * 16)] + [
        (int.from_bytes(os.urandom(8), "big"), os.urandom(16)) for _ in range(500)
    ]:
        text = ids.encode(partition, uuid)
        assert len(text) == ids.LENGTH and ids.is_valid(text)
        assert ids.to_bytes(text) == partition.to_bytes(8, "big") + uuid
        assert ids.partition_key_of(text) == partition


def test_deployment_ids_have_restates_shape() -> None:
    found = ids.resource_id("dp", os.urandom(16))
    assert found.startswith("dp_1") and len(found) == len("dp_1") + 22
    assert ids.resource_id("dp", bytes(16)) == "dp_1" + "0" * 22
