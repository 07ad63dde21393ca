"""The admin API as a plain ASGI app: routing, and the endpoints' glue to the engine.

    admin = Admin(engine, ingress_url="http://127.0.0.1:8080/")
    served = await perdure.runtime.http.serve(admin, "127.0.0.1", 9070)

Paths follow Restate's admin API (also mounted under `/v1/` … `/v4/`, as restate-server 1.7 does:
its CLI calls `/v4/…`); answers are JSON (`/query` answers Arrow unless asked for JSON), errors
are `{"message": "…", "restate_code": null}`. docs/admin.md lists the endpoints.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
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
    render,
    restate_query,
    restate_tables,
    services,
    static,
)
from perdure.admin.http import HTTPError, Receive, Request, Response, Scope, Send, error, read_request
from perdure.admin.http import send_response as _send
from perdure.admin.query import Database, QueryError
from perdure.defaults import ABORT_TIMEOUT
from perdure.errors import ConflictError, PerdureError, UnknownTargetError
from perdure.runtime.deployments import deployment_id
from perdure.runtime.node import Engine
from perdure.runtime.processor import ProcessorStopped
from perdure.storage.api import SqlStore, StoreUnavailable

log = logging.getLogger("perdure.admin")

Endpoint = Callable[[Request], Awaitable[Response]]

_DELETE_MODES = ("cancel", "kill", "purge")
#: The restate-server release whose admin API and SQL schema perdure answers (`/version`): Restate's
#: CLI chooses its queries by it.
RESTATE_VERSION = "1.7.12"
_VERSIONED = re.compile(r"^/v([1-4])(?=/|$)")
#: What restate-server 1.7.12's `/version` announces as `features`; perdure has none of them.
_FEATURES = dict.fromkeys(
    (
        "preflight_invocation_termination_retention",
        "scoped_promise_table_migration",
        "protocol_v7",
        "invoker_yield",
        "unique_random_seeds",
        "scoped_virtual_objects",
        "vqueues_async_refill",
        "vqueues_migration_skip_completed",
        "vqueues",
        "vqueue_obsolete_cleanup",
        "scoped_state_table_migration",
        "kafka_scope",
    ),
    False,
)


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
        self._started_ms = int(time.time() * 1000)  # the in-process "deployment" was made now
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
        versioned = _VERSIONED.match(path)
        if versioned is not None:
            path = path[versioned.end() :] or "/"
            request.api_version = int(versioned.group(1))
        allowed = []
        for method, pattern, endpoint in self._routes:
            match = pattern.match(path)
            if match is None:
                continue
            if method == request.method:
                request.params = match.groupdict()
                if request.api_version is not None and request.api_version >= 2:
                    return await self._restate_shaped(path, request, endpoint)
                return await endpoint(request)
            allowed.append(method)
        if allowed:
            allow = {"allow": ", ".join(allowed)}
            raise HTTPError(405, f"{request.method} is not allowed here", headers=allow)
        raise HTTPError(404, f"no such endpoint: {request.method} {request.path}")

    async def _restate_shaped(self, path: str, request: Request, endpoint: Endpoint) -> Response:
        """Under `/v2`…`/v4` (Restate's CLI), answers as restate-server 1.7 shapes them: the
        in-process services have a `dp_…` deployment (a synthetic one, listed with the others),
        deployments carry RFC 3339 `created_at`, services and handlers `public`."""
        in_process = [
            s for s in self.engine.services() if services.deployment_of(s) == services.DEPLOYMENT_ID
        ]
        synthetic = restate_tables.IN_PROCESS_DEPLOYMENT_ID
        if path.startswith("/deployments/") and request.params.get("id") == synthetic and in_process:
            if request.method != "GET":
                raise HTTPError(
                    409, "the in-process services are the engine's own app: they cannot be removed"
                )
            return Response(200, self._in_process_deployment(in_process, full=True))
        response = await endpoint(request)
        body = response.body
        if response.status >= 300 or not isinstance(body, dict):
            return response
        if path == "/deployments" and request.method == "GET":
            listed = [_restate_deployment(d) for d in body.get("deployments", [])]
            if in_process:
                listed.insert(0, self._in_process_deployment(in_process, full=False))
            body = {"deployments": listed}
        elif path.startswith("/deployments"):
            body = _restate_deployment(body)
            if body.get("id") is None:  # a dry run: Restate's CLI wants the id it would get
                known = [
                    d.id for d in self.engine.deployments() if d.uri.rstrip("/") == body["uri"].rstrip("/")
                ]
                body["id"] = known[0] if known else deployment_id()
                for service in body["services"]:
                    service["deployment_id"] = body["id"]
                    existing = self.engine.service(service["name"])
                    service["revision"] = 1 if existing is None else getattr(existing, "revision", 1) + 1
                return Response(200 if known else 201, body, response.headers, response.content_type)
        elif path == "/services":
            body = {"services": [_restate_service(s) for s in body.get("services", [])]}
        elif path.startswith("/services/") and path.count("/") == 2:
            body = _restate_service(body)
        return Response(response.status, body, response.headers, response.content_type)

    def _in_process_deployment(self, served: list[Any], *, full: bool) -> dict[str, Any]:
        return {
            "id": restate_tables.IN_PROCESS_DEPLOYMENT_ID,
            "uri": self.ingress_url or "in-process://perdure",
            "protocol_type": "BidiStream",
            "http_version": "HTTP/2.0",
            "additional_headers": {},
            "created_at": _rfc3339(self._started_ms),
            "min_protocol_version": 5,
            "max_protocol_version": 7,
            "sdk_version": f"perdure/{__version__} (in-process)",
            "services": [
                _restate_service(services.service_json(s))
                if full
                else {"name": s.name, "revision": getattr(s, "revision", 1)}
                for s in served
            ],
        }

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
                "version": RESTATE_VERSION,
                "perdure_version": __version__,
                "min_admin_api_version": 1,
                "max_admin_api_version": 4,
                "ingress_endpoint": self.ingress_url,
                "features": _FEATURES,
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
        """Restate's `/query`: DataFusion SQL over Restate 1.7's tables, Arrow IPC unless the client
        accepts JSON. `?dialect=sqlite` runs perdure's SQLite views instead (docs/admin.md)."""
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            raise HTTPError(400, 'send a JSON object {"query": "SELECT …"}')
        dialect = request.query.get("dialect", "restate")
        if dialect == "sqlite":
            return await self._sqlite_query(body["query"])
        if dialect != "restate":
            raise HTTPError(400, f"unknown dialect {dialect!r}: restate (the default) or sqlite")
        store = self.engine.store
        if not isinstance(store, SqlStore):
            raise QueryError("this store offers no SQL")
        base = store.sql_base(True)  # on the event loop: reads the store's connections
        catalog = self._restate_catalog()
        answer = await asyncio.to_thread(
            restate_query.run,
            body["query"],
            base,
            catalog,
            timeout=self.query_timeout,
            max_rows=self.max_rows,
        )
        if "application/json" in request.headers.get("accept", ""):
            result: dict[str, Any] = {"rows": restate_query.json_rows(answer.table)}
            if answer.truncated:
                result["truncated"] = True
            return Response(200, result)
        stream = restate_query.arrow_stream(answer.table)
        return Response(200, stream, content_type=restate_query.ARROW_STREAM)

    def _restate_catalog(self) -> restate_tables.Catalog:
        catalog = restate_tables.Catalog()
        by_deployment: dict[str, list[str]] = {}
        for service in self.engine.services():
            deployment_id = services.deployment_of(service)
            if deployment_id == services.DEPLOYMENT_ID:
                deployment_id = restate_tables.IN_PROCESS_DEPLOYMENT_ID
            by_deployment.setdefault(deployment_id, []).append(service.name)
            options = service.options
            catalog.services.append(
                restate_tables.ServiceRow(
                    name=service.name,
                    revision=getattr(service, "revision", 1),
                    public=True,
                    ty=services.service_type(service) or "service",
                    deployment_id=deployment_id,
                    completion_retention_ms=restate_tables.duration_ms(options.idempotency_retention),
                    journal_retention_ms=restate_tables.duration_ms(options.journal_retention),
                )
            )
        in_process = by_deployment.get(restate_tables.IN_PROCESS_DEPLOYMENT_ID)
        if in_process:
            catalog.deployments.append(
                restate_tables.DeploymentRow(
                    id=restate_tables.IN_PROCESS_DEPLOYMENT_ID,
                    endpoint=self.ingress_url or "in-process://perdure",
                    created_at=self._started_ms,
                    min_protocol=5,
                    max_protocol=7,
                    services=tuple(in_process),
                    server=f"perdure/{__version__} (in-process)",
                )
            )
        for d in self.engine.deployments():
            catalog.deployments.append(
                restate_tables.DeploymentRow(
                    id=d.id,
                    endpoint=d.uri,
                    created_at=d.created_at,
                    min_protocol=d.min_protocol_version,
                    max_protocol=d.max_protocol_version,
                    services=tuple(by_deployment.get(d.id, ())),
                )
            )
        return catalog

    async def _sqlite_query(self, statement: str) -> Response:
        result = await self._database().query(statement)
        rows = [{c: _cell(v) for c, v in zip(result.columns, row, strict=True)} for row in result.rows]
        answer: dict[str, Any] = {"rows": rows}
        if result.truncated:
            answer["truncated"] = True
        return Response(200, answer)


def _rfc3339(ms: int) -> str:
    return str(render.timestamp(ms))


def _restate_service(service: dict[str, Any]) -> dict[str, Any]:
    out = dict(service)
    if out.get("deployment_id") == services.DEPLOYMENT_ID:
        out["deployment_id"] = restate_tables.IN_PROCESS_DEPLOYMENT_ID
    out.setdefault("public", True)
    policy = out.get("retry_policy")
    if isinstance(policy, dict) and isinstance(policy.get("on_max_attempts"), str):
        out["retry_policy"] = {**policy, "on_max_attempts": policy["on_max_attempts"].capitalize()}
    out.setdefault("abort_timeout", render.duration(ABORT_TIMEOUT))
    out.setdefault("enable_lazy_state", False)
    out["handlers"] = [
        {
            "public": True,
            "input_description": _description(h.get("input_content_type"), h.get("input_json_schema")),
            "output_description": _description(h.get("output_content_type"), h.get("output_json_schema")),
            **h,
        }
        for h in out.get("handlers", [])
    ]
    return out


def _description(content_type: Any, schema: Any) -> str:
    """How restate-server describes a handler's input or output: `none`, `JSON string`, `JSON
    object`, … when the JSON schema names a type, else the content type."""
    if not content_type:
        return "none"
    if isinstance(schema, dict) and isinstance(schema.get("type"), str) and "json" in str(content_type):
        return f"JSON {schema['type']}"
    return str(content_type)


def _restate_deployment(deployment: dict[str, Any]) -> dict[str, Any]:
    out = dict(deployment)
    if isinstance(out.get("created_at"), int):
        out["created_at"] = _rfc3339(out["created_at"])
    out.setdefault("sdk_version", None)
    services_ = [_restate_service(s) if "handlers" in s else s for s in out.get("services", [])]
    out["services"] = sorted(services_, key=lambda s: str(s.get("name")))  # restate-server's order
    return out


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
