"""Kafka subscriptions: records pushed to handlers exactly once, with a queue per key.

    from perdure.kafka import Broker, KafkaIntake

    async with Broker() as broker, perdure.Engine(app) as engine:   # a dev broker on loopback
        await broker.create_topic("user-updates", partitions=4)
        async with KafkaIntake(engine) as intake:                   # a consumer per subscription
            ...

See docs/kafka.md for options, key mapping, offsets, backpressure and stats.
"""

from perdure.kafka.broker import Broker, BrokerError
from perdure.kafka.consumer import IngestEngine
from perdure.kafka.intake import KafkaIntake
from perdure.kafka.options import OptionError, consumer_config, parse_sink, parse_source
from perdure.kafka.stats import PartitionStats, SubscriptionStats

__all__ = [
    "Broker",
    "BrokerError",
    "IngestEngine",
    "KafkaIntake",
    "OptionError",
    "PartitionStats",
    "SubscriptionStats",
    "consumer_config",
    "parse_sink",
    "parse_source",
]
