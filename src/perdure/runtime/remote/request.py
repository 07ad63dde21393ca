"""The request that opens an attempt: URL, headers and the frames of Start and the journal."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

from perdure.engine.actions import StartAttempt
from perdure.protocol.codec import encode_frame
from perdure.storage.api import Deployment


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a deployment's connections go: scheme, host and port of its URI."""

    scheme: str
    host: str
    port: int

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def origin_of(uri: str) -> Origin:
    """Raises ValueError for anything but an http:// or https:// URI with a host."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http:// or https:// URI: {uri}")
    return Origin(parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))


@dataclass(frozen=True, slots=True)
class Invocation:
    """Where and how one attempt is sent."""

    uri: str  # the deployment's, as registered (for messages)
    url: str
    path: str  # url's path and query, for HTTP/2's :path
    headers: tuple[tuple[str, str], ...]
    version: int

    @property
    def content_type(self) -> str:
        return content_type(self.version)


def content_type(version: int) -> str:
    return f"application/vnd.restate.invocation.v{version}"


def invocation(action: StartAttempt, deployment: Deployment) -> Invocation:
    version = action.protocol_version or deployment.protocol_version
    base = deployment.uri.rstrip("/")
    service = urllib.parse.quote(action.service, safe="")
    handler = urllib.parse.quote(action.handler, safe="")
    url = f"{base}/invoke/{service}/{handler}"
    parts = urllib.parse.urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = [
        ("content-type", content_type(version)),
        ("accept", content_type(version)),
        ("x-restate-invocation-id", action.start.debug_id or action.invocation_id),
    ]
    if action.start.key:
        headers.append(("x-restate-service-key", urllib.parse.quote(action.start.key, safe="")))
    taken = {name for name, _ in headers}
    headers.extend((k.lower(), v) for k, v in deployment.additional_headers.items() if k.lower() not in taken)
    return Invocation(deployment.uri, url, path, tuple(headers), version)


def opening_frames(action: StartAttempt) -> Iterator[bytes]:
    """Start, then the journal in stored order (known_entries says how many follow)."""
    yield encode_frame(action.start)
    for message in action.journal:
        yield encode_frame(message)
