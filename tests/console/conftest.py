"""Browser tests of the web console: a real `perdure dev` with the seed example fed from its
embedded Kafka broker, driven in headless Chromium (Debian's, installed by `python3 dev.py setup`)
through Playwright. Screenshots of every page go to build/console-screenshots/ (or
$PERDURE_SCREENSHOTS); the path is printed at the end of the run.

These tests never skip: without Chromium or Playwright they fail and say how to install them.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.procs import DevServer

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("PERDURE_CHROMIUM", "/usr/bin/chromium"))
SHOTS = Path(os.environ.get("PERDURE_SCREENSHOTS", ROOT / "build" / "console-screenshots"))
# As the machine notes say: without the background-networking flags Chromium keeps dialling out,
# and this closed network refuses it.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOPIC, PARTITIONS = "user-updates", 4
SINK = "service://userUpdates/updateUserEvent"
USERS, UPDATES, NEW_ACCOUNTS = 12, 240, 2
WAIT_S = 60.0  # the longest any fixture waits for the server (every wait is bounded)

sys.path.insert(0, str(ROOT / "examples"))
from demo import make_plan, poison  # noqa: E402  (the demo's records: the same users, one poison record)


@dataclass
class Seeded:
    """The running server and what was fed to it."""

    server: DevServer
    admin: str
    ingress: str
    subscription: str
    produced: int
    poison: tuple[int, int]  # (partition, offset)
    new_accounts: list[str]
    users: list[str] = field(default_factory=list)

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(self.admin + path, params=params, timeout=10)
        response.raise_for_status()
        return response.json()


def wait_for(condition: Any, what: str, within: float = WAIT_S) -> Any:
    """Poll `condition()` every 0.2 s until it returns something truthy; fail after `within` s."""
    import time

    deadline = time.monotonic() + within
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        time.sleep(0.2)


async def _feed(bootstrap: str) -> tuple[int, tuple[int, int], Any]:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
    finally:
        await admin.close()
    plan = make_plan(USERS, UPDATES, NEW_ACCOUNTS)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, request_timeout_ms=10_000)
    await producer.start()
    try:
        sent = [(value, await producer.send(TOPIC, value, key=key.encode())) for key, value in plan.records]
        await producer.flush()
        [future] = [f for value, f in sent if value == poison(plan.poison_key)]
        metadata = await future
    finally:
        await producer.stop()
    return len(plan.records), (metadata.partition, metadata.offset), plan


async def _with_timeout(bootstrap: str) -> tuple[int, tuple[int, int], Any]:
    return await asyncio.wait_for(_feed(bootstrap), WAIT_S)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """`perdure dev tests/console/seed_app.py:app --kafka embedded`, subscribed to user-updates
    and fed the demo's records (2 new accounts sleeping 5 min with updates queued behind them, one
    poison record); stopped by pid after the module's tests."""
    tmp = tmp_path_factory.mktemp("console")
    # Module-scoped, like `browser`: both are gone before other test modules run (Playwright's sync
    # API drives its own event loop; it must not outlive these tests into pytest-asyncio's).
    server = DevServer(
        "tests/console/seed_app.py:app",
        tmp / "console.db",
        stderr=tmp / "stderr.txt",
        args=("--kafka", "embedded", "--kafka-port", "0"),
    )
    server.cwd = ROOT
    server.start()
    try:
        assert server.healthy(), server.stderr
        assert "  console   " in server.output, server.output  # the banner prints the console's URL
        clusters = httpx.get(server.admin + "/kafka-clusters", timeout=10).json()["clusters"]
        bootstrap = clusters[0]["properties"]["bootstrap.servers"]
        body = {
            "source": f"kafka://local/{TOPIC}",
            "sink": SINK,
            "options": {"auto.offset.reset": "earliest"},
        }
        created = httpx.post(server.admin + "/subscriptions", json=body, timeout=10)
        assert created.status_code == 201, created.text
        # In a thread of its own: Playwright's sync API may already run an event loop in this one.
        with ThreadPoolExecutor(1) as pool:
            produced, poison, plan = pool.submit(asyncio.run, _with_timeout(bootstrap)).result()
        seeded = Seeded(
            server,
            server.admin,
            server.ingress,
            created.json()["id"],
            produced,
            poison,
            plan.new_accounts,
            plan.users,
        )
        wait_for(
            lambda: seeded.get("/activity")["counts"]["suspended"] == NEW_ACCOUNTS,
            "the new accounts' first updates to sleep",
        )
        yield seeded
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is missing: run `python3 dev.py setup` (it installs the dev extras)")
    if not CHROMIUM.exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: run `python3 dev.py setup` as root (it installs Debian's "
            "chromium), or `apt-get install chromium`, or set PERDURE_CHROMIUM to a Chromium binary"
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(seeded: Seeded, browser: Any) -> Iterator[Any]:
    """A fresh tab at 1280×900; JavaScript errors on the page fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield tab
    finally:
        context.close()
    assert not errors, errors


_SAVED: list[Path] = []  # this run's screenshots, for the summary line


def screenshot(page: Any, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    _SAVED.append(path)
    return path


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _SAVED:
        terminalreporter.write_line(f"console screenshots ({len(_SAVED)}): {SHOTS}")
