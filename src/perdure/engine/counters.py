"""Counters the engine keeps as it applies commands (exported as metrics by the admin API)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Counters:
    invocations_created: int = 0
    attempts_started: int = 0
    attempts_failed: int = 0
    suspensions: int = 0
    completed_ok: int = 0
    completed_failed: int = 0
    journal_entries: int = 0
    expired: int = 0  # completed invocations deleted after their retention
    deliveries_sent: int = 0  # effects written for another partition
    deliveries_applied: int = 0  # effects of other partitions applied here
    parked: int = 0  # Kafka records parked in the dead-letter store
    calls_forwarded: int = 0  # ingress calls answered by the node on this machine that runs them
