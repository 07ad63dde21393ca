"""Subscription options: Restate's (librdkafka) property names mapped to aiokafka's arguments.

A subscription's `options` are merged over its cluster's `properties` (the subscription wins),
as in Restate. Every property perdure understands is listed in `MAPPED`; properties that only
tune librdkafka itself are accepted and ignored (`IGNORED`); anything else is refused with an
`OptionError` naming it, so a setting never silently does nothing.

    config = consumer_config("sub_1", {"bootstrap.servers": "127.0.0.1:9092"},
                             {"auto.offset.reset": "earliest"})
    config.kwargs["auto_offset_reset"]   # "earliest"
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from perdure.errors import InvalidInputError


class OptionError(InvalidInputError):
    """A subscription's source, sink or options cannot be used. Not retriable: fix the subscription."""


def _int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise OptionError(f"{name} must be an integer, not {value!r}") from None


def _bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise OptionError(f"{name} must be true or false, not {value!r}")


def _choice(mapping: Mapping[str, str]) -> Callable[[str, str], str]:
    def parse(name: str, value: str) -> str:
        try:
            return mapping[value.strip().lower()]
        except KeyError:
            raise OptionError(f"{name} must be one of {', '.join(sorted(mapping))}, not {value!r}") from None

    return parse


def _str(name: str, value: str) -> str:
    return value


_OFFSET_RESET = _choice(
    {
        "earliest": "earliest",
        "smallest": "earliest",
        "beginning": "earliest",
        "latest": "latest",
        "largest": "latest",
        "end": "latest",
        "error": "none",
        "none": "none",
    }
)

#: librdkafka property → (aiokafka argument, parser).
MAPPED: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "bootstrap.servers": ("bootstrap_servers", _str),
    "metadata.broker.list": ("bootstrap_servers", _str),
    "group.id": ("group_id", _str),
    "group.instance.id": ("group_instance_id", _str),
    "client.id": ("client_id", _str),
    "client.rack": ("client_rack", _str),
    "auto.offset.reset": ("auto_offset_reset", _OFFSET_RESET),
    "session.timeout.ms": ("session_timeout_ms", _int),
    "heartbeat.interval.ms": ("heartbeat_interval_ms", _int),
    "max.poll.interval.ms": ("max_poll_interval_ms", _int),
    "fetch.max.bytes": ("fetch_max_bytes", _int),
    "fetch.min.bytes": ("fetch_min_bytes", _int),
    "fetch.wait.max.ms": ("fetch_max_wait_ms", _int),
    "max.partition.fetch.bytes": ("max_partition_fetch_bytes", _int),
    "request.timeout.ms": ("request_timeout_ms", _int),
    "socket.timeout.ms": ("request_timeout_ms", _int),
    "retry.backoff.ms": ("retry_backoff_ms", _int),
    "metadata.max.age.ms": ("metadata_max_age_ms", _int),
    "topic.metadata.refresh.interval.ms": ("metadata_max_age_ms", _int),
    "connections.max.idle.ms": ("connections_max_idle_ms", _int),
    "check.crcs": ("check_crcs", _bool),
    "isolation.level": (
        "isolation_level",
        _choice({"read_committed": "read_committed", "read_uncommitted": "read_uncommitted"}),
    ),
    "partition.assignment.strategy": ("partition_assignment_strategy", _str),
    "security.protocol": (
        "security_protocol",
        _choice(
            {
                "plaintext": "PLAINTEXT",
                "ssl": "SSL",
                "sasl_plaintext": "SASL_PLAINTEXT",
                "sasl_ssl": "SASL_SSL",
            }
        ),
    ),
    "sasl.mechanism": (
        "sasl_mechanism",
        _choice(
            {
                "plain": "PLAIN",
                "scram-sha-256": "SCRAM-SHA-256",
                "scram-sha-512": "SCRAM-SHA-512",
                "gssapi": "GSSAPI",
                "oauthbearer": "OAUTHBEARER",
            }
        ),
    ),
    "sasl.username": ("sasl_plain_username", _str),
    "sasl.password": ("sasl_plain_password", _str),
    "sasl.kerberos.service.name": ("sasl_kerberos_service_name", _str),
    "ssl.ca.location": ("ssl:cafile", _str),
    "ssl.certificate.location": ("ssl:certfile", _str),
    "ssl.key.location": ("ssl:keyfile", _str),
    "ssl.key.password": ("ssl:password", _str),
}
MAPPED["sasl.mechanisms"] = MAPPED["sasl.mechanism"]

#: Accepted and ignored: librdkafka-internal tuning, or settings perdure forces itself
#: (offsets are stored with the invocations; the group commit is only for lag tools).
IGNORED = frozenset(
    {
        "enable.auto.commit",
        "enable.auto.offset.store",
        "auto.commit.interval.ms",
        "enable.partition.eof",
        "socket.keepalive.enable",
        "socket.nagle.disable",
        "queued.min.messages",
        "queued.max.messages.kbytes",
        "statistics.interval.ms",
        "log_level",
        "log.connection.close",
        "debug",
        "api.version.request",
        "broker.address.family",
        "reconnect.backoff.ms",
        "reconnect.backoff.max.ms",
        "allow.auto.create.topics",
    }
)

_ASSIGNORS = {"range", "roundrobin", "cooperative-sticky", "sticky"}


def parse_source(source: str) -> tuple[str, str]:
    """`kafka://CLUSTER/TOPIC` → (cluster, topic)."""
    parts = urlsplit(source)
    topic = parts.path.lstrip("/")
    if parts.scheme != "kafka" or not parts.netloc or not topic or "/" in topic:
        raise OptionError(f"a subscription source looks like kafka://CLUSTER/TOPIC, not {source!r}")
    return parts.netloc, topic


def parse_sink(sink: str) -> tuple[str, str]:
    """`service://SERVICE/HANDLER` → (service, handler)."""
    parts = urlsplit(sink)
    handler = parts.path.lstrip("/")
    if parts.scheme != "service" or not parts.netloc or not handler or "/" in handler:
        raise OptionError(f"a subscription sink looks like service://SERVICE/HANDLER, not {sink!r}")
    return parts.netloc, handler


@dataclass(frozen=True)
class ConsumerConfig:
    """What one subscription's consumer is built from: aiokafka keyword arguments and its group."""

    group_id: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def consumer_config(
    subscription_id: str, cluster_properties: Mapping[str, str], options: Mapping[str, str]
) -> ConsumerConfig:
    """Merge cluster properties and subscription options (the subscription wins) into aiokafka args.

    Defaults, as in Restate: `group.id` = the subscription id, `client.id` = `perdure`,
    `auto.offset.reset` = `latest`; and `session.timeout.ms` = 6000, `heartbeat.interval.ms` = 2000,
    `fetch.wait.max.ms` = 100.
    Auto-commit is always off. Raises `OptionError`.
    """
    merged = {k: v for k, v in {**cluster_properties, **options}.items() if k not in POLICY_OPTIONS}
    kwargs: dict[str, Any] = {
        "group_id": subscription_id,
        "client_id": "perdure",
        "auto_offset_reset": "latest",
        # 6 s is the smallest session brokers accept by default (group.min.session.timeout.ms); a
        # short session makes a new or restarted subscription consume within seconds, where the
        # client default (10 s) makes tansu hold the first group join for 5 s.
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 2000,
        # Kafka answers a fetch as soon as records arrive; tansu holds it about half this long
        # regardless (500 ms by default: ~250 ms of latency per record). Idle fetches are cheap.
        "fetch_max_wait_ms": 100,
    }
    ssl: dict[str, str] = {}
    unknown = []
    for name, value in merged.items():
        if name in IGNORED:
            continue
        if name not in MAPPED:
            unknown.append(name)
            continue
        arg, parse = MAPPED[name]
        parsed = parse(name, str(value))
        if arg.startswith("ssl:"):
            ssl[arg[4:]] = parsed
        else:
            kwargs[arg] = parsed
    if unknown:
        raise OptionError(
            f"unsupported Kafka option(s) {', '.join(sorted(unknown))}; "
            f"perdure understands {', '.join(sorted(MAPPED))} and ignores {', '.join(sorted(IGNORED))}"
        )
    if not kwargs.get("bootstrap_servers"):
        raise OptionError("no bootstrap.servers: give it in the cluster's properties")
    if "partition_assignment_strategy" in kwargs:
        kwargs["partition_assignment_strategy"] = _assignors(kwargs["partition_assignment_strategy"])
    policy({k: str(v) for k, v in options.items() if k in POLICY_OPTIONS})  # refuse bad values now
    if ssl:
        kwargs["ssl_context"] = _ssl_context(ssl)
    kwargs["enable_auto_commit"] = False
    return ConsumerConfig(group_id=str(kwargs["group_id"]), kwargs=kwargs)


#: perdure's own subscription options (not Kafka client settings): what happens to a record whose
#: invocation fails, flow control, and records without a key. `policy()` parses them.
POLICY_OPTIONS = frozenset({"on.failure", "max.concurrency", "rate", "ordering", "key.missing"})


@dataclass(frozen=True)
class Policy:
    """A subscription's perdure options (docs/kafka.md, "Dead letters" and "Flow control").

    `on_failure`: `block` (the key waits for a failing invocation, Restate's behaviour), `park`
    (a record whose invocation fails for good is parked in the dead-letter store and its key goes
    on), or `topic:NAME` (parked, and produced to the Kafka topic NAME). `max_concurrency`: at most
    this many invocations of the subscription accepted and not completed (None: no limit). `rate`:
    records accepted per second (None: no limit). `ordering`: `key` (FIFO per Kafka key), `none`
    (records of a key may run concurrently), or None (not given: keyed sinks are FIFO per key
    anyway, service sinks run a partition's records concurrently, as Restate does).
    `key_missing`: `fail` (a record without a key for a keyed sink is a failed invocation) or
    `empty` (it goes to the key "", as in Restate).
    """

    on_failure: str = "block"
    max_concurrency: int | None = None
    rate: float | None = None
    ordering: str | None = None
    key_missing: str = "fail"

    @property
    def parks(self) -> bool:
        return self.on_failure != "block"

    @property
    def dead_letter_topic(self) -> str | None:
        return self.on_failure[6:] if self.on_failure.startswith("topic:") else None


def policy(options: Mapping[str, str]) -> Policy:
    """The perdure options of a subscription (`POLICY_OPTIONS`); raises `OptionError` for bad values."""
    on_failure = str(options.get("on.failure", "block")).strip()
    if on_failure not in ("block", "park") and not (on_failure.startswith("topic:") and len(on_failure) > 6):
        raise OptionError(f"on.failure must be block, park or topic:NAME, not {on_failure!r}")
    max_concurrency = rate = None
    if "max.concurrency" in options:
        max_concurrency = _int("max.concurrency", str(options["max.concurrency"]))
        if max_concurrency < 1:
            raise OptionError(f"max.concurrency must be at least 1, not {max_concurrency}")
    if "rate" in options:
        try:
            rate = float(options["rate"])
        except ValueError:
            raise OptionError(
                f"rate must be a number of records per second, not {options['rate']!r}"
            ) from None
        if not rate > 0:
            raise OptionError(f"rate must be positive, not {options['rate']!r}")
    ordering = None
    if "ordering" in options:
        ordering = _choice({"key": "key", "none": "none"})("ordering", str(options["ordering"]))
    key_missing = _choice({"fail": "fail", "empty": "empty"})(
        "key.missing", str(options.get("key.missing", "fail"))
    )
    return Policy(on_failure, max_concurrency, rate, ordering, key_missing)


def _assignors(value: str) -> tuple[type[Any], ...]:
    from aiokafka.coordinator.assignors.range import (  # type: ignore[import-untyped]
        RangePartitionAssignor,
    )
    from aiokafka.coordinator.assignors.roundrobin import (  # type: ignore[import-untyped]
        RoundRobinPartitionAssignor,
    )
    from aiokafka.coordinator.assignors.sticky.sticky_assignor import (  # type: ignore[import-untyped]
        StickyPartitionAssignor,
    )

    table: dict[str, type[Any]] = {
        "range": RangePartitionAssignor,
        "roundrobin": RoundRobinPartitionAssignor,
        "sticky": StickyPartitionAssignor,
        "cooperative-sticky": StickyPartitionAssignor,  # aiokafka has no cooperative protocol
    }
    names = [n.strip().lower() for n in value.split(",") if n.strip()]
    bad = [n for n in names if n not in _ASSIGNORS]
    if bad or not names:
        raise OptionError(
            f"partition.assignment.strategy must list {', '.join(sorted(_ASSIGNORS))}, not {value!r}"
        )
    return tuple(table[n] for n in names)


def _ssl_context(files: Mapping[str, str]) -> Any:
    from aiokafka.helpers import create_ssl_context  # type: ignore[import-untyped]

    try:
        return create_ssl_context(**files)
    except (OSError, ValueError) as e:
        raise OptionError(f"bad TLS settings ({', '.join(files)}): {e}") from e
