"""Services, virtual objects and their handlers: the authoring API.

    greeter = Service("greeter")

    @greeter.handler()
    async def greet(ctx: Context, name: str) -> str:
        return f"hello {name}"

    counter = VirtualObject("counter")

    @counter.handler()                  # exclusive: one at a time per key, may write state
    async def add(ctx: ObjectContext, n: int) -> int: ...

    @counter.handler(kind="shared")     # concurrent, read-only
    async def get(ctx: ObjectSharedContext) -> int: ...

The decorator returns the function unchanged (still callable in unit tests) and remembers its
`Handler`, so calls can name the function itself: `ctx.object_call(add, key="a", arg=1)`.
"""

from __future__ import annotations

import enum
import inspect
import re
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from perdure.sdk import serde
from perdure.sdk.options import HandlerOptions

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-.]*$")
_ATTR = "__perdure_handler__"

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class ServiceKind(enum.StrEnum):
    SERVICE = "service"
    OBJECT = "object"
    WORKFLOW = "workflow"


class HandlerKind(enum.StrEnum):
    EXCLUSIVE = "exclusive"  # objects: one at a time per key, may write state
    SHARED = "shared"  # objects/workflows: concurrent, read-only state
    WORKFLOW = "workflow"  # a workflow's run-once handler


@dataclass(frozen=True)
class Handler:
    """One registered handler: its function, kind, serdes and options."""

    service: ServiceBase
    name: str
    fn: Callable[..., Awaitable[Any]]
    kind: HandlerKind | None  # None for plain services
    takes_input: bool
    input_serde: serde.Serde
    output_serde: serde.Serde
    options: HandlerOptions
    # Derived once: the ingress, router and invoker read them on every call.
    keyed: bool = field(init=False)  # addressed by key (objects, workflows)
    workflow_run: bool = field(init=False)  # the run-once handler of a workflow
    exclusive: bool = field(init=False)  # holds its key's lock while running (queue per key)
    qualified_name: str = field(init=False)  # "service/handler"

    def __post_init__(self) -> None:
        init = object.__setattr__  # frozen
        init(self, "keyed", self.service.kind is not ServiceKind.SERVICE)
        init(self, "workflow_run", self.kind is HandlerKind.WORKFLOW)
        init(self, "exclusive", self.kind in (HandlerKind.EXCLUSIVE, HandlerKind.WORKFLOW))
        init(self, "qualified_name", f"{self.service.name}/{self.name}")


def handler_of(target: Any) -> Handler:
    """The `Handler` registered for a decorated function (or a `Handler` itself)."""
    if isinstance(target, Handler):
        return target
    found = getattr(target, _ATTR, None)
    if not isinstance(found, Handler):
        name = getattr(target, "__qualname__", repr(target))
        raise TypeError(
            f"{name} is not a perdure handler: decorate it with @service.handler(), "
            "or call it by name with generic_call"
        )
    return found


def _signature(fn: Callable[..., Any]) -> tuple[bool, Any, Any]:
    """(takes_input, input type, output type) from the handler's signature and hints."""
    params = list(inspect.signature(fn).parameters.values())
    if not params or len(params) > 2:
        raise TypeError(f"handler {fn.__qualname__} must take (ctx) or (ctx, input)")
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to 'any JSON'
        hints = {}
    input_type: Any = None
    if len(params) == 2:
        input_type = hints.get(params[1].name, inspect.Parameter.empty)
    output_type = hints.get("return", inspect.Signature.empty)
    return len(params) == 2, input_type, output_type


class ServiceBase:
    """Common base of `Service`, `VirtualObject` and `Workflow`."""

    kind: ServiceKind = ServiceKind.SERVICE

    def __init__(self, name: str, *, options: HandlerOptions | None = None) -> None:
        if not _NAME.match(name):
            raise ValueError(f"invalid service name {name!r}: use letters, digits, '_', '-' or '.'")
        if name.startswith("__perdure"):
            raise ValueError(f"invalid service name {name!r}: names starting with '__perdure' are reserved")
        self.name = name
        self.options = options or HandlerOptions()
        self.handlers: dict[str, Handler] = {}

    def _register(
        self,
        fn: Callable[..., Awaitable[Any]],
        name: str | None,
        kind: HandlerKind | None,
        options: HandlerOptions | None,
    ) -> Handler:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"handler {fn.__qualname__} must be an async function")
        handler_name = name or fn.__name__
        if not _NAME.match(handler_name):
            raise ValueError(f"invalid handler name {handler_name!r}")
        if handler_name in self.handlers:
            raise ValueError(f"{self.name} already has a handler named {handler_name!r}")
        takes_input, input_type, output_type = _signature(fn)
        handler = Handler(
            service=self,
            name=handler_name,
            fn=fn,
            kind=kind,
            takes_input=takes_input,
            input_serde=serde.for_type(input_type) if takes_input else serde.NoneSerde(),
            output_serde=serde.for_type(output_type),
            options=(options or HandlerOptions()).merged_over(self.options),
        )
        self.handlers[handler_name] = handler
        setattr(fn, _ATTR, handler)
        return handler

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, handlers={list(self.handlers)})"


class Service(ServiceBase):
    """Stateless handlers; invocations run concurrently."""

    kind = ServiceKind.SERVICE

    def handler(self, name: str | None = None, *, options: HandlerOptions | None = None) -> Callable[[F], F]:
        """Register an `async def h(ctx: Context[, input]) -> output` handler."""

        def register(fn: F) -> F:
            self._register(fn, name, None, options)
            return fn

        return register


class VirtualObject(ServiceBase):
    """Handlers addressed by key, with per-key state and a queue per key for exclusive handlers."""

    kind = ServiceKind.OBJECT

    def handler(
        self,
        name: str | None = None,
        *,
        kind: Literal["exclusive", "shared"] = "exclusive",
        options: HandlerOptions | None = None,
    ) -> Callable[[F], F]:
        """Register a handler; `kind="shared"` for concurrent read-only ones."""

        def register(fn: F) -> F:
            self._register(fn, name, HandlerKind(kind), options)
            return fn

        return register


class Workflow(ServiceBase):
    """A `run` handler that executes at most once per key, plus shared handlers that read its
    state and complete its durable promises.

        signup = Workflow("signup")

        @signup.main()
        async def run(ctx: WorkflowContext, email: str) -> str:
            return await ctx.promise("link").value()

        @signup.handler()
        async def click(ctx: WorkflowSharedContext, secret: str) -> None:
            await ctx.promise("link").resolve(secret)
    """

    kind = ServiceKind.WORKFLOW

    def main(self, name: str | None = None, *, options: HandlerOptions | None = None) -> Callable[[F], F]:
        """Register the run-once handler (named after the function, conventionally `run`)."""

        def register(fn: F) -> F:
            if any(h.kind is HandlerKind.WORKFLOW for h in self.handlers.values()):
                raise ValueError(f"workflow {self.name!r} already has a main handler")
            self._register(fn, name, HandlerKind.WORKFLOW, options)
            return fn

        return register

    def handler(self, name: str | None = None, *, options: HandlerOptions | None = None) -> Callable[[F], F]:
        """Register a shared handler (concurrent, reads state, completes promises)."""

        def register(fn: F) -> F:
            self._register(fn, name, HandlerKind.SHARED, options)
            return fn

        return register


@dataclass(frozen=True)
class KafkaSubscription:
    """Records of a Kafka topic pushed to a handler, declared in code with the `App`.

        KafkaSubscription("kafka://local/user-updates", update_user_event, {"auto.offset.reset": "earliest"})

    `sink` is a decorated handler or `"service://SERVICE/HANDLER"`; `options` are Restate's
    (librdkafka-named) consumer options. Applied at every engine start: declaring it again is
    the same subscription.
    """

    source: str
    sink: Callable[..., Awaitable[Any]] | str
    options: Mapping[str, str] = field(default_factory=dict)

    @property
    def sink_uri(self) -> str:
        if isinstance(self.sink, str):
            return self.sink
        return f"service://{handler_of(self.sink).qualified_name}"


@dataclass
class App:
    """The set of services one engine (or deployment) serves, and what feeds them.

    app = perdure.App(
        [user_updates],
        kafka_clusters={"local": {"bootstrap.servers": "127.0.0.1:9092"}},
        subscriptions=[KafkaSubscription("kafka://local/user-updates", update_user_event)],
    )
    """

    services: list[ServiceBase] = field(default_factory=list)
    kafka_clusters: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    subscriptions: list[KafkaSubscription] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by_name: dict[str, ServiceBase] = {}
        for service in self.services:
            if service.name in self._by_name:
                raise ValueError(f"two services are named {service.name!r}")
            if not service.handlers:
                raise ValueError(f"service {service.name!r} has no handlers")
            self._by_name[service.name] = service

    def service(self, name: str) -> ServiceBase | None:
        return self._by_name.get(name)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Serve the app as a deployment (ASGI): `hypercorn module:app`; see `perdure.sdk.endpoint`."""
        from perdure.sdk.endpoint import Endpoint  # endpoint imports this module

        endpoint = self.__dict__.get("_endpoint")
        if endpoint is None:
            endpoint = self.__dict__["_endpoint"] = Endpoint(self)
        await endpoint(scope, receive, send)

    def handler(self, service: str, handler: str) -> Handler | None:
        svc = self._by_name.get(service)
        return None if svc is None else svc.handlers.get(handler)
