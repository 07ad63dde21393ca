"""Restate-style (librdkafka) options mapped to aiokafka's arguments; source and sink URIs."""

from __future__ import annotations

import pytest
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from perdure.kafka import OptionError, consumer_config, parse_sink, parse_source

CLUSTER = {"bootstrap.servers": "127.0.0.1:9092"}


def test_defaults_like_restate() -> None:
    config = consumer_config("sub_1", CLUSTER, {})
    assert config.group_id == "sub_1"
    assert config.kwargs == {
        "bootstrap_servers": "127.0.0.1:9092",
        "group_id": "sub_1",
        "client_id": "perdure",
        "auto_offset_reset": "latest",
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 2000,
        "fetch_max_wait_ms": 100,
        "enable_auto_commit": False,
    }


def test_subscription_options_win_over_cluster_properties() -> None:
    config = consumer_config(
        "sub_1",
        {**CLUSTER, "group.id": "from-cluster", "session.timeout.ms": "30000"},
        {
            "group.id": "mine",
            "auto.offset.reset": "smallest",
            "session.timeout.ms": "6000",
            "enable.auto.commit": "true",  # forced off, whatever is asked
            "isolation.level": "read_committed",
            "partition.assignment.strategy": "range",
            "check.crcs": "false",
        },
    )
    assert config.group_id == "mine"
    kw = config.kwargs
    assert kw["auto_offset_reset"] == "earliest"
    assert kw["session_timeout_ms"] == 6000
    assert kw["enable_auto_commit"] is False
    assert kw["isolation_level"] == "read_committed"
    assert kw["partition_assignment_strategy"] == (RangePartitionAssignor,)
    assert kw["check_crcs"] is False


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"auto.offset.reset": "sometimes"}, "auto.offset.reset must be one of"),
        ({"session.timeout.ms": "soon"}, "must be an integer"),
        ({"transactional.id": "x"}, "unsupported Kafka option.*transactional.id"),
        ({"partition.assignment.strategy": "magic"}, "partition.assignment.strategy"),
        ({"bootstrap.servers": ""}, "no bootstrap.servers"),
    ],
)
def test_bad_options_are_refused_by_name(options: dict[str, str], message: str) -> None:
    with pytest.raises(OptionError, match=message):
        consumer_config("sub_1", CLUSTER, options)


def test_uris() -> None:
    assert parse_source("kafka://local/user-updates") == ("local", "user-updates")
    assert parse_sink("service://userUpdates/updateUserEvent") == ("userUpdates", "updateUserEvent")
    for bad in ("kafka://local", "http://local/t", "kafka:///t", "kafka://local/a/b"):
        with pytest.raises(OptionError):
            parse_source(bad)
    with pytest.raises(OptionError):
        parse_sink("service://svc")
