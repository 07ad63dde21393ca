"""Settings of the HTTP invoker: timeouts, connection pool and buffer limits, written once."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass

#: `timeouts_of(service, handler)` -> (inactivity_ms, abort_ms), or None for the defaults.
TimeoutsOf = Callable[[str, str], "tuple[int, int] | None"]


@dataclass(frozen=True)
class RemoteOptions:
    """How attempts on remote deployments are run. Durations are in seconds.

    Bidirectional attempts: after `inactivity_timeout` with no frame either way the request body
    is closed (the deployment then suspends on its own); if it has not ended `abort_timeout`
    later, the stream is reset and the attempt fails (and is retried). Request/response attempts
    fail when the response is silent for `response_timeout`.

        RemoteOptions(inactivity_timeout=5.0, max_streams_per_connection=64)
    """

    connect_timeout: float = 10.0
    inactivity_timeout: float = 60.0
    abort_timeout: float = 600.0
    response_timeout: float = 600.0
    # HTTP/2 connections (bidirectional mode), as restate-server sets them.
    max_streams_per_connection: int = 128
    # A connection takes no new streams after this many and closes once they finish: servers
    # such as hypercorn close a connection after 1,000 requests, cutting the streams in flight.
    recycle_after_streams: int = 500
    stream_window: int = 2 * 1024 * 1024
    connection_window: int = 5 * 1024 * 1024
    keepalive_interval: float = 40.0
    keepalive_timeout: float = 20.0
    idle_connection_timeout: float = 60.0
    # Notifications not yet taken by the deployment (its window is full) before the attempt fails.
    max_unsent_bytes: int = 64 * 1024 * 1024
    # After End/Suspension/Error: how long to wait for the deployment to close its response.
    close_grace: float = 2.0
    # HTTP/1.1 connections open at once per deployment origin (one per running request/response
    # attempt; more attempts wait for one to finish).
    max_http1_connections: int = 64
    # Only the first bytes of an error response are kept for the message.
    error_body_limit: int = 500
    # https:// deployments: a PEM file of CAs to trust instead of the system's store.
    ca_file: str | None = None

    def tls_context(self) -> ssl.SSLContext:
        """A new client TLS context (each user sets its own ALPN on it, so none is shared).

        Raises OSError naming `ca_file` when it cannot be loaded.
        """
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except OSError as e:
            raise OSError(f"cannot load ca_file {self.ca_file}: {e.strerror or e}") from e
