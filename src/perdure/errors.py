"""perdure's exceptions.

    Exception
    ├── TerminalError            a handler failed for good: never retried (code defaults to 500)
    └── PerdureError             something in perdure itself went wrong
        ├── UnknownTargetError   no such service, handler or invocation (not retried: fix the name)
        ├── ConflictError        the invocation is in the wrong state for that (e.g. kill a completed one)
        ├── InvalidInputError    the input does not fit the handler's type (not retried)
        ├── JournalMismatchError the handler did something else than its journal records
        │                        (retried: deploy code that matches, or purge the invocation)
        ├── SerdeError           a value could not be encoded or decoded
        └── DatabaseInUse        another engine holds the database file (not retried while it runs)

    BaseException
    └── ControlSignal            internal control flow (suspension); never catch it

`ControlSignal` derives from `BaseException` so that `except Exception` in user code cannot
swallow a suspension.
"""

from __future__ import annotations


class TerminalError(Exception):
    """Raise from a handler to fail the invocation without retrying.

    The caller (a handler awaiting a call, an HTTP client, `Engine.object_call`) receives the
    same `TerminalError`, with `status_code` as the HTTP status.

        raise TerminalError("user not found", status_code=404)
    """

    def __init__(self, message: str, status_code: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code

    def __repr__(self) -> str:
        return f"TerminalError({self.message!r}, status_code={self.status_code})"


class PerdureError(Exception):
    """Base of errors raised by perdure itself."""

    retriable = False


class UnknownTargetError(PerdureError):
    """The service or handler named in a call is not registered. Not retriable: fix the name."""


class ConflictError(PerdureError):
    """An operation does not fit the invocation's state (e.g. purge a running one): HTTP 409."""


class InvalidInputError(PerdureError):
    """The input bytes do not decode into the handler's input type. Not retriable."""


class SerdeError(PerdureError):
    """A value could not be serialized or deserialized with the handler's serde."""


class DatabaseInUse(PerdureError):
    """Another engine holds the database (a SQLite file is written by one process at a time).

    Stop that engine first, or open another database; for several processes on one database use
    PostgreSQL. Not retriable while the holder runs.
    """


class JournalMismatchError(PerdureError):
    """The handler's code diverged from its recorded journal (protocol error 570).

    The attempt fails and is retried; it keeps failing until code that matches the journal is
    deployed or the invocation is killed/purged.
    """

    retriable = True

    def __init__(self, handler: str, index: int, expected: str, found: str) -> None:
        super().__init__(
            f"journal mismatch in {handler} at entry {index}: "
            f"the journal has {expected}, the handler now does {found}"
        )
        self.handler = handler
        self.index = index
        self.expected = expected
        self.found = found


class ControlSignal(BaseException):
    """Internal control flow that user code must not intercept."""


class Suspended(ControlSignal):
    """The attempt was suspended: the handler's coroutine is unwound and replayed later."""
