"""A layered `Store`: begin/commit/rollback over a `View`, the commit pipeline, and fail-stop.

The backend-neutral half of a write-behind store (`perdure.storage.api.Store`'s contract). A
transaction buffers its writes (`Writes`) and reads through the view; `commit()` hands the writes
to the backend's `Sink` — `prepare` on the event loop (a bug there stops the store), then `submit`
to the backend's writer thread — and the view keeps them as a layer until the writer reports the
COMMIT returned. A backend (SQLite, PostgreSQL) supplies the `Reads` of its view and the sink.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

from perdure.storage import api
from perdure.storage.layered.transaction import Transaction
from perdure.storage.layered.view import View
from perdure.storage.layered.writes import Writes

#: Transactions that may be committing (commit() called, not yet durable) when begin() is called.
MAX_COMMITTING = 3

Done = Callable[[BaseException | None], None]


class StoreFailed(RuntimeError):
    """A commit failed (I/O error, disk full, a lost partition lease…), so the store refuses all
    further work; not retryable.

    Raised by `begin()`, and by `commit()` of every transaction after the one that failed (that one
    raises the original error). None of their writes were applied: stop the engine (or the
    partition) and start it again, which resumes from the durable state.
    """


class Sink(Protocol):
    """Where a layered store's committed writes go."""

    def prepare(self, writes: Writes) -> object:
        """Turn writes into what the writer applies (on the event loop; raising stops the store)."""
        ...

    def submit(self, prepared: object, done: Done) -> None:
        """Apply after everything submitted before; call `done(None | error)` (from any thread) once
        the COMMIT returned or failed. Reports come in submission order."""
        ...


class Store:
    """Write-behind transactions with pipelined commits over `view` and `sink` (see the module doc)."""

    def __init__(self, view: View, sink: Sink) -> None:
        self._view = view
        self._sink = sink
        self._open: Transaction | None = None
        self._committing: list[asyncio.Future[None]] = []  # oldest first, parallel to the view's layers
        self._failure: BaseException | None = None
        self._closed = False

    @property
    def failure(self) -> BaseException | None:
        """The error that stopped the store, if one did."""
        return self._failure

    def begin(self) -> api.Transaction:
        if self._closed:
            raise RuntimeError("the store is closed")
        if self._failure is not None:
            raise self._failed()
        if self._open is not None:
            raise RuntimeError("a transaction is still open; commit or roll it back before begin()")
        if len(self._committing) >= MAX_COMMITTING:
            raise RuntimeError(
                f"{MAX_COMMITTING} transactions are still committing; await the oldest commit() first"
            )
        txn = self._open = Transaction(self._view, Writes(self._view.last_seq))
        return txn

    def commit(self, txn: api.Transaction) -> asyncio.Future[None]:
        """Hand the transaction to the writer now; the future is settled once it is durable.

        The hand-off happens in this call, before anything is awaited, so `begin()` may follow at
        once. The future raises the commit's error, or `StoreFailed` if an earlier commit failed.
        """
        open_ = self._check_open(txn)
        self._open = None
        if self._failure is not None:
            raise self._failed()
        loop = asyncio.get_running_loop()
        writes = open_._w
        try:
            prepared = self._sink.prepare(writes)
        except BaseException as e:  # a bug: nothing was applied, but the engine must stop here
            self._failure = e
            raise
        done: asyncio.Future[None] = loop.create_future()
        self._view.layers.append(writes)
        self._committing.append(done)
        self._sink.submit(prepared, on_loop(loop, lambda error: self._durable(done, error)))
        return done

    def rollback(self, txn: api.Transaction) -> None:
        """Discard the open transaction's writes (committing ones are not affected)."""
        self._check_open(txn)
        self._open = None

    def _close_pipeline(self) -> None:
        """No more transactions; committing ones still finish (their writer reports them)."""
        self._closed = True
        self._open = None

    def _durable(self, done: asyncio.Future[None], error: BaseException | None) -> None:
        """On the loop: the writer finished the oldest committing transaction (reports come in order)."""
        assert self._committing[0] is done
        del self._committing[0]
        if error is None:
            self._view.durable()
            settle(done, None)
            return
        del self._view.layers[0]
        if self._failure is None:
            self._failure = error
            settle(done, error)
        else:
            settle(done, self._failed())

    def _failed(self) -> StoreFailed:
        error = StoreFailed(
            f"the store failed: a commit did not complete ({self._failure!r});"
            " restart the engine to resume from the durable state"
        )
        error.__cause__ = self._failure
        return error

    def _check_open(self, txn: api.Transaction) -> Transaction:
        if self._open is None or txn is not self._open:
            raise RuntimeError("not this store's open transaction (already committed or rolled back?)")
        return self._open


def on_loop(
    loop: asyncio.AbstractEventLoop, callback: Callable[[BaseException | None], None]
) -> Callable[[BaseException | None], None]:
    """Wrap `callback` so a writer thread can call it: it runs on `loop`."""

    def call(error: BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to tell
            loop.call_soon_threadsafe(callback, error)

    return call


def settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # its awaiting task was cancelled
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
