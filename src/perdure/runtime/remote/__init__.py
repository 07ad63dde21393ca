"""Running attempts on remote deployments over Restate's service protocol (HTTP).

`RemoteInvoker` is the engine-facing part; `RemoteOptions` its settings. The pieces:
`request` (URL, headers, opening frames), `inbound` (decoding the response), `unary`
(request/response with httpx), `bidi` (one HTTP/2 stream both ways), `h2connection`/`h2stream`/
`pool` (the HTTP/2 client), `failures` (what the engine is told when the transport fails).
"""

from perdure.runtime.remote.invoker import RemoteInvoker
from perdure.runtime.remote.options import RemoteOptions

__all__ = ["RemoteInvoker", "RemoteOptions"]
