"""The admin API as a plain ASGI app: routing, and the endpoints' glue to the engine.

    admin = Admin(engine, ingress_url="http://127.0.0.1:8080/")
    served = await perdure.runtime.http.serve(admin, "127.0.0.1", 9070)

Paths follow Restate's admin API (also mounted under `/v1/`); every answer is JSON, errors are
`{"message": "…", "restate_code": null}`. docs/admin.md lists the endpoints.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from perdure import __version__
from perdure.admin import deployments, invocations, kafka, metrics, openapi, services
from perdure.admin.http import HTTPError, Receive, Request, Response, Scope, Send, error, read_request
from perdure.admin.http import send_response as _send
from perdure.admin.query import Database, QueryError, Snapshot, snapshot
from perdure.admin.render import payload, text
from perdure.errors import ConflictError, PerdureError, UnknownTargetError
from perdure.runtime.node import Engine
from perdure.runtime.processor import ProcessorStopped

log = logging.getLogger("perdure.admin")

Endpoint = Callable[[Request], Awaitable[Response]]

_DELETE_MODES = ("cancel", "kill", "purge")


class Admin:
    """The admin API of one engine (Restate's paths; JSON in and out)."""

    def __init__(
        self,
        engine: Engine,
        *,
        ingress_url: str | None = None,
        query_timeout: float = 2.0,
        max_rows: int = 10_000,
    ) -> None:
        self.engine = engine
        self.ingress_url = ingress_url
        self.query_timeout = query_timeout
        self.max_rows = max_rows
        self._controls: dict[str, Callable[[str], Awaitable[None]]] = {
            "cancel": engine.cancel,
            "kill": engine.kill,
            "purge": engine.purge,
            "pause": engine.pause,
            "resume": engine.resume,
        }
        self._routes: list[tuple[str, re.Pattern[str], Endpoint]] = [
            (method, re.compile(f"^{pattern}$"), endpoint)
            for method, pattern, endpoint in (
                ("GET", "/openapi.json", self.openapi),
                ("GET", "/health", self.health),
                ("GET", "/version", self.version),
                ("GET", "/metrics", self.metrics),
                ("GET", "/services", self.list_services),
                ("GET", "/services/(?P<name>[^/]+)", self.get_service),
                ("GET", "/invocations", self.list_invocations),
                ("GET", "/invocations/(?P<id>[^/]+)", self.get_invocation),
                ("DELETE", "/invocations/(?P<id>[^/]+)", self.delete_invocation),
                ("PATCH", "/invocations/(?P<id>[^/]+)/(?P<action>[^/]+)", self.control),
                ("GET", "/state/(?P<service>[^/]+)/(?P<key>.+)", self.get_state),
                ("POST", "/query", self.query),
                *kafka.Endpoints(engine).routes(),
                *deployments.Endpoints(engine).routes(),
            )
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            request = await read_request(scope, receive)
            response = await self._route(request)
        except HTTPError as e:
            response = error(e.status, e.message, e.headers)
        except QueryError as e:
            response = error(400, str(e))
        except ProcessorStopped as e:
            response = error(503, str(e))
        except PerdureError as e:  # e.g. the engine is not started
            response = error(503, str(e))
        except Exception as e:
            log.exception("admin request failed")
            response = error(500, f"internal error: {type(e).__name__}: {e}")
        await _send(send, response)

    async def _route(self, request: Request) -> Response:
        path = request.path
        if path == "/v1" or path.startswith("/v1/"):
            path = path[3:] or "/"
        allowed = []
        for method, pattern, endpoint in self._routes:
            match = pattern.match(path)
            if match is None:
                continue
            if method == request.method:
                request.params = match.groupdict()
                return await endpoint(request)
            allowed.append(method)
        if allowed:
            allow = {"allow": ", ".join(allowed)}
            raise HTTPError(405, f"{request.method} is not allowed here", headers=allow)
        raise HTTPError(404, f"no such endpoint: {request.method} {request.path}")

    def _database(self) -> Database:
        path: Path | None = self.engine.database_path()
        reader = self.engine.reader()

        def copy(everything: bool) -> Snapshot:
            return snapshot(reader, everything=everything)

        return Database(
            path or copy,
            lambda name: services.service_type(self.engine.service(name)),
            timeout=self.query_timeout,
            max_rows=self.max_rows,
        )

    # ---- endpoints

    async def health(self, request: Request) -> Response:
        try:
            failure = self.engine.processor.failure
        except PerdureError as e:
            return error(503, str(e))
        if failure is not None:
            return error(503, f"the engine's processor stopped after a failure: {failure!r}")
        return Response(200, {"status": "ok"})

    async def openapi(self, request: Request) -> Response:
        return Response(200, openapi.document(__version__))

    async def version(self, request: Request) -> Response:
        return Response(
            200,
            {
                "version": __version__,
                "min_admin_api_version": 1,
                "max_admin_api_version": 1,
                "ingress_endpoint": self.ingress_url,
            },
        )

    async def metrics(self, request: Request) -> Response:
        return Response(200, metrics.render(self.engine))

    async def list_services(self, request: Request) -> Response:
        return Response(200, services.list_services(self.engine.services()))

    async def get_service(self, request: Request) -> Response:
        service = self.engine.service(request.params["name"])
        if service is None:
            raise HTTPError(404, f"no service named {request.params['name']!r}")
        return Response(200, services.service_json(service))

    async def list_invocations(self, request: Request) -> Response:
        filters = invocations.Filters.parse(request.query)
        return Response(200, await invocations.list_page(self._database(), filters))

    async def get_invocation(self, request: Request) -> Response:
        return Response(200, invocations.describe(self.engine.reader(), request.params["id"]))

    async def control(self, request: Request) -> Response:
        action = request.params["action"]
        if action not in self._controls:
            raise HTTPError(404, f"no such endpoint: PATCH /invocations/{{id}}/{action}")
        await self._apply(action, request.params["id"])
        return Response(invocations.control_status(action), {})

    async def delete_invocation(self, request: Request) -> Response:
        mode = request.query.get("mode", "cancel")
        if mode not in _DELETE_MODES:
            raise HTTPError(400, f"bad mode {mode!r}; one of {', '.join(_DELETE_MODES)}")
        await self._apply(mode, request.params["id"])
        return Response(202, {})

    async def _apply(self, action: str, invocation_id: str) -> None:
        invocations.check_id(invocation_id)
        try:
            await self._controls[action](invocation_id)
        except UnknownTargetError as e:
            raise HTTPError(404, str(e)) from None
        except ConflictError as e:
            raise HTTPError(409, str(e)) from None

    async def get_state(self, request: Request) -> Response:
        name, key = request.params["service"], request.params["key"]
        if self.engine.service(name) is None:
            raise HTTPError(404, f"no service named {name!r}")
        raw = self.engine.reader().get_all_state(name, key)
        state = {text(k): _state_value(v) for k, v in sorted(raw.items())}
        return Response(200, {"service": name, "key": key, "state": state})

    async def query(self, request: Request) -> Response:
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            raise HTTPError(400, 'send a JSON object {"query": "SELECT …"}')
        result = await self._database().query(body["query"])
        rows = [{c: _cell(v) for c, v in zip(result.columns, row, strict=True)} for row in result.rows]
        answer: dict[str, Any] = {"rows": rows}
        if result.truncated:
            answer["truncated"] = True
        return Response(200, answer)


def _state_value(data: bytes) -> Any:
    """A state value: its JSON, or `{"base64": …}` when it is not JSON."""
    shown = payload(data, base64_key="base64")
    return shown.get("value", shown)


def _cell(value: Any) -> Any:
    """SQLite values in JSON: blobs as base64 text."""
    return base64.b64encode(value).decode() if isinstance(value, bytes) else value


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
