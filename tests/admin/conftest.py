"""Fixtures: an engine (memory, SQLite or PostgreSQL, manual clock) with its admin API on a real port."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from perdure.admin import Admin
from perdure.runtime.http import Served
from perdure.storage import memory
from perdure.storage.api import Store
from perdure.testing import Harness

from .handlers import APP


@dataclass
class Env:
    engine: Harness
    client: httpx.AsyncClient
    store: Store | str


OpenAdmin = Callable[..., Awaitable[Env]]


@pytest.fixture
async def open_admin(
    http_server: Callable[[Any], Awaitable[Served]], tmp_path: Path, postgres: Callable[[], str]
) -> AsyncIterator[OpenAdmin]:
    """Factory: `env = await open_admin("memory" | "sqlite" | "postgres", **admin_options)`."""
    async with contextlib.AsyncExitStack() as stack:

        async def open_(kind: str = "memory", **options: Any) -> Env:
            store: Store | str = {
                "memory": memory.Store,
                "sqlite": lambda: f"sqlite:///{tmp_path}/db.sqlite",
                "postgres": postgres,
            }[kind]()
            engine = await stack.enter_async_context(Harness(APP, store=store))
            served = await http_server(Admin(engine, **options))
            client = await stack.enter_async_context(httpx.AsyncClient(base_url=served.url, timeout=10))
            return Env(engine, client, store)

        yield open_


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Run a test on every backend."""
    return str(request.param)
