"""The open transaction: writes go to its `Writes` buffer, reads see that buffer over the `View`.

Nothing here writes to a database; a cache miss reads through the view's `Reads`.
Invocations are kept msgpack-encoded, so every `get_invocation` returns a fresh object: a caller
mutating what it got (and then rolling back) never changes what the store holds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import msgspec

from perdure.storage.api import Entry, Invocation, Position, Status, Timer
from perdure.storage.layered.view import View
from perdure.storage.layered.writes import ABSENT, JournalOps, Key, Slot, StateOps, Writes

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Invocation).decode

_MISSING = object()


class Transaction:
    __slots__ = ("_view", "_w")

    def __init__(self, view: View, writes: Writes) -> None:
        self._view = view
        self._w = writes

    # ---- InvocationTable

    def get_invocation(self, invocation_id: str) -> Invocation | None:
        w = self._w
        slot = w.invocations.get(invocation_id) or w.seen.get(invocation_id) or self._before(invocation_id)
        return None if slot.record is None else _decode(slot.record)

    def put_invocation(self, invocation: Invocation, *, new: bool = False) -> None:
        inv = invocation
        w = self._w
        invocations = w.invocations
        if new and inv.id not in w.seen:
            w.seen[inv.id] = ABSENT  # a fresh id: nothing to look up
        seq = (invocations.get(inv.id) or w.seen.get(inv.id) or self._before(inv.id)).seq
        if seq is None:
            seq = self._new_seq()
        ident = (inv.service, inv.handler, inv.key, inv.created_at)
        invocations[inv.id] = Slot(seq, _encode(inv), inv.status, inv.modified_at, ident)

    def delete_invocation(self, invocation_id: str) -> None:
        slot = self._w.invocations.get(invocation_id) or self._before(invocation_id)
        if slot.record is not None:
            self._w.invocations[invocation_id] = Slot(slot.seq, None)

    def invocations_with_status(self, status: Status) -> list[Invocation]:
        records = self._view.with_status(status.value)
        for writes in (*self._view.layers, self._w):
            for invocation_id, slot in writes.invocations.items():
                if slot.record is not None and slot.status == status:
                    records[invocation_id] = slot.record
                else:
                    records.pop(invocation_id, None)
        found = [_decode(r) for r in records.values()]
        found.sort(key=lambda inv: (inv.created_at, inv.id))
        return found

    def _before(self, invocation_id: str) -> Slot:
        """The id's slot in the view, looked up once per transaction (the view holds still meanwhile)."""
        slot = self._w.seen.get(invocation_id)
        if slot is None:
            slot = self._w.seen[invocation_id] = self._view.slot(invocation_id)
        return slot

    def _new_seq(self) -> int:
        seq = self._w.max_seq = self._view.next_seq()
        return seq

    # ---- JournalTable

    def append_entries(self, invocation_id: str, start_index: int, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        w = self._w
        ops = w.journals.get(invocation_id)
        if ops is None:
            seq = self._seq_for_journal(invocation_id)
            ops = w.journals[invocation_id] = JournalOps(seq, fresh=seq > w.first_seq)
        stored = ops.entries
        for i, entry in enumerate(entries, start_index):
            stored[i] = entry

    def read_journal(self, invocation_id: str) -> list[Entry]:
        w = self._w
        seq = (
            w.invocations.get(invocation_id) or w.seen.get(invocation_id) or self._before(invocation_id)
        ).seq
        if seq is None:
            return []
        view = self._view
        chain = [
            ops
            for journals in (*view.recent, *(layer.journals for layer in view.layers), w.journals)
            if (ops := journals.get(invocation_id)) is not None and ops.seq == seq
        ]
        start = -1
        for n, ops in enumerate(chain):
            if ops.cleared or ops.fresh:  # nothing before it counts
                start = n
        entries = view.journal(seq) if start < 0 else {}
        for ops in chain[max(start, 0) :]:
            entries.update(ops.entries)
        return [entries[i] for i in sorted(entries)]

    def delete_journal(self, invocation_id: str) -> None:
        ops = self._w.journals.get(invocation_id)
        if ops is None:
            seq = (self._w.invocations.get(invocation_id) or self._before(invocation_id)).seq
            if seq is None:
                return  # no row anywhere
            ops = self._w.journals[invocation_id] = JournalOps(seq)
        ops.cleared = True
        ops.entries.clear()

    def _seq_for_journal(self, invocation_id: str) -> int:
        """The id's seq; a journal written before its invocation (or without one) allocates it."""
        w = self._w
        slot = w.invocations.get(invocation_id) or w.seen.get(invocation_id) or self._before(invocation_id)
        if slot.seq is not None:
            return slot.seq
        seq = self._new_seq()
        self._w.invocations[invocation_id] = Slot(seq, None)
        return seq

    # ---- StateTable

    def get_state(self, service: str, key: str, name: bytes) -> bytes | None:
        k = (service, key)
        for writes in (self._w, *reversed(self._view.layers)):
            ops = writes.state.get(k)
            if ops is not None:
                value = ops.values.get(name, _MISSING)
                if value is not _MISSING:
                    return value  # type: ignore[return-value]
                if ops.cleared:
                    return None
        return self._view.state(service, key, name)

    def get_all_state(self, service: str, key: str) -> dict[bytes, bytes]:
        k = (service, key)
        chain = [ops for writes in (*self._view.layers, self._w) if (ops := writes.state.get(k)) is not None]
        start = 0
        for n, ops in enumerate(chain):
            if ops.cleared:
                start = n
        state = {} if chain and chain[start].cleared else self._view.all_state(service, key)
        for ops in chain[start:]:
            for name, value in ops.values.items():
                if value is None:
                    state.pop(name, None)
                else:
                    state[name] = value
        return state

    def set_state(self, service: str, key: str, name: bytes, value: bytes) -> None:
        self._state_ops((service, key)).values[name] = value

    def clear_state(self, service: str, key: str, name: bytes) -> None:
        self._state_ops((service, key)).values[name] = None

    def clear_all_state(self, service: str, key: str) -> None:
        ops = self._state_ops((service, key))
        ops.cleared = True
        ops.values.clear()

    def _state_ops(self, k: Key) -> StateOps:
        ops = self._w.state.get(k)
        if ops is None:
            ops = self._w.state[k] = StateOps()
        return ops

    # ---- InboxTable

    def get_lock(self, service: str, key: str) -> str | None:
        holder = self._w.locks.get((service, key), _MISSING)
        return self._view.lock((service, key)) if holder is _MISSING else holder  # type: ignore[return-value]

    def set_lock(self, service: str, key: str, invocation_id: str) -> None:
        self._w.locks[service, key] = invocation_id

    def release_lock(self, service: str, key: str) -> None:
        self._w.locks[service, key] = None

    def inbox_push(self, service: str, key: str, invocation_id: str) -> None:
        seq = self._view.next_inbox_seq()
        self._inbox((service, key)).append((seq, invocation_id))
        self._w.inbox_pushed[seq] = (service, key, seq, invocation_id)

    def inbox_pop(self, service: str, key: str) -> str | None:
        k = (service, key)
        queue = self._w.inboxes.get(k)
        if queue is None:
            if not self._view.inbox(k):
                return None  # nothing queued: no need for a copy
            queue = self._inbox(k)
        if not queue:
            return None
        seq, invocation_id = queue.popleft()
        self._dropped(service, key, seq)
        return invocation_id

    def inbox_remove(self, service: str, key: str, invocation_id: str) -> bool:
        k = (service, key)
        queued = self._w.inboxes.get(k)
        if not any(i == invocation_id for _, i in (queued if queued is not None else self._view.inbox(k))):
            return False
        queue = self._inbox(k)
        for item in queue:
            if item[1] == invocation_id:
                queue.remove(item)
                self._dropped(service, key, item[0])
                return True
        raise AssertionError("unreachable: the id was found above")  # pragma: no cover

    def _inbox(self, k: Key) -> deque[tuple[int, str]]:
        """This transaction's own copy of the queue of `k` (copy-on-write: layers are never mutated)."""
        queue = self._w.inboxes.get(k)
        if queue is None:
            queue = self._w.inboxes[k] = deque(self._view.inbox(k))
        return queue

    def _dropped(self, service: str, key: str, seq: int) -> None:
        if self._w.inbox_pushed.pop(seq, None) is None:  # stored before this transaction: delete the row
            self._w.inbox_dropped.append((service, key, seq))

    # ---- TimerTable

    def put_timer(self, timer: Timer) -> None:
        self._w.timers[timer.id] = timer

    def delete_timer(self, timer_id: str) -> bool:
        if self.get_timer(timer_id) is None:
            return False
        self._w.timers[timer_id] = None
        return True

    def get_timer(self, timer_id: str) -> Timer | None:
        for writes in (self._w, *reversed(self._view.layers)):
            timer = writes.timers.get(timer_id, _MISSING)
            if timer is not _MISSING:
                return timer  # type: ignore[return-value]
        return self._view.timer(timer_id)

    # ---- OffsetTable

    def get_offset(self, subscription_id: str, topic: str, partition: int) -> Position | None:
        key = (subscription_id, topic, partition)
        for writes in (self._w, *reversed(self._view.layers)):
            position = writes.offsets.get(key)
            if position is not None:
                return position
        return self._view.offset(key)

    def set_offset(self, subscription_id: str, topic: str, partition: int, position: Position) -> None:
        self._w.offsets[subscription_id, topic, partition] = position

    # ---- OutboxTable

    def put_delivery(self, partition: int, body: bytes) -> None:
        source = f"{self._view.name}:{self._view.next_seq()}"
        self._w.deliveries.append((partition, source, body))

    def delete_delivery(self, delivery_id: int) -> None:
        self._w.delivered.append(delivery_id)
