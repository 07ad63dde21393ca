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
from typing import Any

from perdure import __version__
from perdure.admin import (
    activity,
    cluster,
    deadletters,
    deployments,
    invocations,
    kafka,
    keys,
    metrics,
    openapi,
    poison,
    services,
    static,
)
from perdure.admin.http import HTTPError, Receive, Request, Response, Scope, Send, error, read_request
from perdure.admin.http import send_response as _send
from perdure.admin.query import Database, QueryError
from perdure.errors import ConflictError, PerdureError, UnknownTargetError
from perdure.runtime.node import Engine
from perdure.runtime.processor import ProcessorStopped
from perdure.storage.api import StoreUnavailable

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
        console: bool = False,
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
                ("GET", "/cluster", self.cluster),
                ("GET", "/metrics", self.metrics),
                ("GET", "/services", self.list_services),
                ("GET", "/services/(?P<name>[^/]+)", self.get_service),
                ("GET", "/services/(?P<name>[^/]+)/keys", self.list_keys),
                ("GET", "/services/(?P<name>[^/]+)/keys/(?P<key>.+)", self.get_key),
                ("GET", "/activity", self.get_activity),
                ("GET", "/subscriptions/(?P<id>[^/]+)/failures", self.subscription_failures),
                ("GET", "/invocations", self.list_invocations),
                ("GET", "/invocations/(?P<id>[^/]+)", self.get_invocation),
                ("DELETE", "/invocations/(?P<id>[^/]+)", self.delete_invocation),
                ("PATCH", "/invocations/(?P<id>[^/]+)/(?P<action>[^/]+)", self.control),
                ("GET", "/state/(?P<service>[^/]+)/(?P<key>.+)", self.get_state),
                ("POST", "/query", self.query),
                *kafka.Endpoints(engine).routes(),
                *deadletters.Endpoints(engine).routes(),
                *deployments.Endpoints(engine).routes(),
                *(self._console_routes() if console else ()),
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
        except (ProcessorStopped, StoreUnavailable) as e:
            response = error(503, str(e))
        except PerdureError as e:  # e.g. the engine is not started
            response = error(503, str(e))
        except Exception as e:
            log.exception("admin request failed")
            response = error(500, f"internal error: {type(e).__name__}: {e}")
        await _send(send, response)

    def _console_routes(self) -> list[tuple[str, str, Endpoint]]:
        async def ui(request: Request) -> Response:
            return static.asset(request.params["path"])

        async def ui_root(request: Request) -> Response:
            return static.redirect("/ui/")

        return [("GET", "/ui", ui_root), ("GET", "/ui/(?P<path>.*)", ui)]

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
        return Database(
            self.engine.store,
            lambda name: services.service_type(self.engine.service(name)),
            timeout=self.query_timeout,
            max_rows=self.max_rows,
        )

    # ---- endpoints

    async def health(self, request: Request) -> Response:
        try:
            failure = self.engine.failure
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

    async def cluster(self, request: Request) -> Response:
        try:
            return Response(200, await cluster.describe(self.engine))
        except StoreUnavailable as e:
            raise HTTPError(503, str(e)) from None

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
        return Response(200, await invocations.list_page(self._database(), filters, self._in_process))

    def _in_process(self) -> list[str]:
        """The names of the services the engine's own app serves (`deployment=in-process`)."""
        return [s.name for s in self.engine.services() if services.deployment_of(s) == services.DEPLOYMENT_ID]

    async def list_keys(self, request: Request) -> Response:
        name = self._keyed_service(request.params["name"])
        prefix, limit = keys.limits(request.query)
        return Response(200, await keys.list_keys(self._database(), name, prefix, limit))

    async def get_key(self, request: Request) -> Response:
        name = self._keyed_service(request.params["name"])
        answer = await keys.describe_key(self._database(), self.engine.reader(), name, request.params["key"])
        return Response(200, answer)

    def _keyed_service(self, name: str) -> str:
        service = self.engine.service(name)
        if service is None:
            raise HTTPError(404, f"no service named {name!r}")
        if services.service_type(service) == "service":
            raise HTTPError(400, f"{name} is a service: only virtual objects and workflows have keys")
        return name

    async def get_activity(self, request: Request) -> Response:
        minutes = activity.window(request.query)
        now = self.engine.clock.now_ms()
        answer = await activity.activity(self._database(), self.engine.reader(), now, minutes)
        return Response(200, answer)

    async def subscription_failures(self, request: Request) -> Response:
        sub = self.engine.subscription(request.params["id"])
        if sub is None:
            raise HTTPError(404, f"no subscription {request.params['id']!r}")
        limit = poison.limit_of(request.query)
        return Response(200, await poison.failed_records(self._database(), sub, limit))

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
        state = keys.state_of(self.engine.reader(), name, key)
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
