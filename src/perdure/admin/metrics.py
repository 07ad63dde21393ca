"""`GET /metrics`: the engine's counters and gauges in Prometheus' text format."""

from __future__ import annotations

from perdure.admin import deadletters, kafka
from perdure.runtime.node import Engine
from perdure.storage.api import Status


class _Writer:
    """Collects metric families, each with its `# HELP` and `# TYPE` lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        self.lines.append(f"# HELP perdure_{name} {help_text}")
        self.lines.append(f"# TYPE perdure_{name} {kind}")
        for labels, value in samples:
            number = repr(float(value)) if isinstance(value, float) else str(value)
            self.lines.append(f"perdure_{name}{labels} {number}")

    def one(self, name: str, kind: str, help_text: str, value: float) -> None:
        self.family(name, kind, help_text, [("", value)])

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(engine: Engine) -> str:
    """The metrics text of a running engine."""
    out = _Writer()
    counts = engine.reader().count_invocations()
    out.family(
        "invocations",
        "gauge",
        "Stored invocations by status.",
        [(f'{{status="{status.value}"}}', n) for status, n in counts.items()],
    )
    c = engine.counters
    out.one("invocations_created_total", "counter", "Invocations created since start.", c.invocations_created)
    out.one("attempts_started_total", "counter", "Attempts started since start.", c.attempts_started)
    out.one("attempts_failed_total", "counter", "Attempts that failed.", c.attempts_failed)
    out.one("suspensions_total", "counter", "Attempts suspended (dropped from memory).", c.suspensions)
    out.family(
        "completions_total",
        "counter",
        "Invocations completed since start, by result.",
        [('{result="ok"}', c.completed_ok), ('{result="failed"}', c.completed_failed)],
    )
    out.one("journal_entries_total", "counter", "Journal entries appended since start.", c.journal_entries)
    out.one(
        "ingress_forwarded_total",
        "counter",
        "Ingress calls passed to the node on this machine that runs their partition.",
        c.calls_forwarded,
    )
    s, queued = engine.processor_stats()
    out.one("processor_commands_total", "counter", "Commands applied by the processor.", s.commands)
    out.one("processor_batches_total", "counter", "Batches committed (one commit each).", s.batches)
    out.one("processor_commit_seconds_total", "counter", "Time spent committing batches.", s.commit_seconds)
    out.one("processor_max_batch_size", "gauge", "The largest batch committed so far.", s.max_batch)
    out.one("processor_failed_commands_total", "counter", "Commands that failed to apply.", s.failed_commands)
    out.one("processor_queue_length", "gauge", "Commands queued for the processor.", queued)
    out.one(
        "processor_up",
        "gauge",
        "1 while the processor runs, 0 after a storage failure stopped it.",
        0 if engine.failure is not None else 1,
    )
    out.one("attempts_in_memory", "gauge", "Attempts held in memory now.", engine.invoker.active)
    out.one("timers_pending", "gauge", "Durable timers scheduled and not yet fired.", engine.timers_pending)
    out.one("inbox_depth", "gauge", "Invocations waiting in a key's queue.", counts[Status.PENDING])
    for family in kafka.metric_families(engine.kafka):
        out.family(*family)
    out.family(
        "dead_letters",
        "gauge",
        "Kafka records parked by their subscription's on.failure policy, not yet re-driven or discarded.",
        deadletters.metric_samples(engine),
    )
    return out.text()
