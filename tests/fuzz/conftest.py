"""One `perdure dev` process serving `app.py` on free loopback ports, shared by the HTTP fuzzers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.procs import DevServer

APP = str(Path(__file__).with_name("app.py")) + ":app"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    tmp = tmp_path_factory.mktemp("fuzz")
    dev = DevServer(APP, tmp / "fuzz.db", stderr=tmp / "stderr")
    dev.start()
    try:
        yield dev
    finally:
        dev.kill()
