"""One engine per database file: an OS lock on `{database}.lock`, held while the store is open.

Two engines writing one SQLite file would each trust their caches and sequence counters and corrupt
each other's work (seen: `UNIQUE constraint failed` stopping both). The lock is an `flock` on a file
of its own (SQLite's POSIX locks on the database file are independent of it), taken before anything
is read or migrated; the kernel releases it when the process exits, crashes included, so a stale
lock file never blocks a restart. The holder writes its pid and host into the file, for the error
message of the next one. Read-only connections (`perdure sql`, the admin API's `/query`) do not
take it.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from perdure.errors import DatabaseInUse

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class FileLock:
    """An exclusive, non-blocking lock on `path` (created if missing), until `release()`."""

    def __init__(self, path: Path, database: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                    raise DatabaseInUse(
                        f"the database {database} is in use by another perdure engine ({holder}):"
                        " stop that one first, or give this one another database (--db / PERDURE_DB)."
                        " For several processes on one database use PostgreSQL (cluster mode)"
                    ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd: int | None = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the descriptor releases the flock
