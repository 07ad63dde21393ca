"""The backpressure count: pending invocations per partition, fed by completions."""

from __future__ import annotations

from perdure.kafka.pending import Slot, Tracker


def test_counts_until_completed() -> None:
    drained: list[int] = []
    tracker, slot = Tracker(), Slot(lambda s: drained.append(len(s)))
    tracker.begin()
    tracker.end(slot, ["a", "b", "c"], now=10.0)
    assert len(slot) == 3 and slot.oldest_age_ms(now=10.5) == 500
    tracker.completed("b")
    tracker.completed("zzz")  # not ours, no ingest in flight: ignored
    assert list(slot.ids) == ["a", "c"] and drained == [2]
    tracker.forget(slot)
    tracker.completed("a")
    assert len(slot) == 0 and len(tracker) == 0 and drained == [2]


def test_completed_before_ingest_returned_is_not_pending() -> None:
    tracker, slot = Tracker(), Slot()
    tracker.begin()
    tracker.completed("fast")  # an already-failed invocation completes inside the ingest
    tracker.end(slot, ["fast", "slow"])
    assert list(slot.ids) == ["slow"]


def test_early_cache_is_bounded() -> None:
    tracker, slot = Tracker(early_capacity=10), Slot()
    tracker.begin()
    for i in range(1000):
        tracker.completed(f"x{i}")
    assert len(tracker._early) == 10
    tracker.end(slot, [])
    assert not tracker._early
