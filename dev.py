#!/usr/bin/env python3
"""perdure's developer entry point: needs nothing but Python 3.11+.

    python3 dev.py demo     set up .venv (first time); the seed example fed from Kafka by `perdure dev`
                            (`demo --http`: the same example called over HTTP; `demo --exit`: stop after)
    python3 dev.py test     set up .venv (first time) and run the whole test suite, one pytest worker
                            per core (up to 4; `test -n 0` runs it in one process)
    python3 dev.py lint     ruff + mypy
    python3 dev.py bench    the benchmarks in bench/
    python3 dev.py simulate --seeds N [--seed S]
                            the engine's deterministic simulation over N seeds (from S); a failing
                            seed prints the command that replays it

Setup creates `.venv` next to this file and installs perdure with its dev extras; it is redone
only when pyproject.toml changes. It installs Debian's chromium for the web console's browser
tests when it is missing and this runs as root with apt-get (elsewhere it says how; those tests
fail without a browser, they never skip). With npm on PATH it also installs restate-server, the
restate CLI and the TypeScript SDK (for the interop tests) into .cache/node, redone only when
tests/interop/package.json changes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
STAMP = VENV / ".perdure-installed"
NODE = ROOT / ".cache" / "node"
NODE_PACKAGE = ROOT / "tests" / "interop" / "package.json"
SKIPPED = "the interop tests with restate-server, the restate CLI and the TypeScript SDK will be skipped"
NODE_STAMP = NODE / ".perdure-installed"
# bench/ files that are not benchmarks: apps the benchmarks serve, and the chaos soak (minutes
# of kills and restarts: run it on its own, `.venv/bin/python bench/soak.py`)
NOT_BENCHMARKS = {"remote_services.py", "soak.py", "soak_app.py"}


CHROMIUM = Path(os.environ.get("PERDURE_CHROMIUM", "/usr/bin/chromium"))


def setup() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"perdure needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    setup_python()
    setup_node()
    setup_browser()


def setup_browser() -> None:
    """Debian's chromium for tests/console (Playwright drives it; its own browser download does not
    work offline). Installed with apt-get when missing and we are root; otherwise a hint."""
    if CHROMIUM.exists():
        return
    apt = shutil.which("apt-get")
    if apt is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        print(
            f"no Chromium at {CHROMIUM}: the console's browser tests will fail. Install Debian's "
            "chromium (apt-get install chromium) or set PERDURE_CHROMIUM to a Chromium binary.",
            flush=True,
        )
        return
    print("installing Debian's chromium (apt-get) for the console's browser tests ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", "chromium"]):
        if subprocess.run(command, env=env).returncode != 0:
            print(f"`{' '.join(command)}` failed: the console's browser tests will fail", flush=True)
            return


def setup_python() -> None:
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == want and PY.exists():
        return
    if not PY.exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing perdure and its dev dependencies into .venv ...", flush=True)
    run([str(PY), "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    run([str(PY), "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[dev]"])
    STAMP.write_text(want)


def setup_node() -> None:
    """restate-server, the restate CLI and the TypeScript SDK for the interop tests, from npm into
    .cache/node (ignored by git); redone only when tests/interop/package.json changes. Without npm (or node)
    those tests are skipped."""
    npm = shutil.which("npm")
    if npm is None:
        print(f"npm not found: {SKIPPED}", flush=True)
        return
    want = hashlib.sha256(NODE_PACKAGE.read_bytes()).hexdigest()
    if NODE_STAMP.exists() and NODE_STAMP.read_text() == want:
        return
    print("installing restate-server, the restate CLI and the TS SDK (npm) into .cache/node ...", flush=True)
    NODE.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(NODE_PACKAGE, NODE / "package.json")
    # --ignore-scripts: the server binary comes as a platform package; no install script is needed
    command = [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"]
    if subprocess.run(command, cwd=NODE).returncode != 0:
        print(f"npm install failed: {SKIPPED}", flush=True)
        return
    NODE_STAMP.write_text(want)


def run(cmd: list[str], *, child_handles_ctrl_c: bool = False) -> None:
    if not child_handles_ctrl_c:
        result = subprocess.run(cmd, cwd=ROOT)
        if result.returncode != 0:
            sys.exit(result.returncode)
        return
    # The child (the demo) runs in a session of its own and dev.py forwards SIGINT and SIGTERM to it,
    # once each: a Ctrl-C at the terminal and a `kill -INT` of dev.py both stop the demo, which stops
    # the server it started (a second Ctrl-C makes that server exit at once). Forwarding only what
    # reaches dev.py means the demo never sees one Ctrl-C twice.
    child = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)

    def forward(signum: int, frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code != 0:
        sys.exit(code)


def parallel(extra: list[str]) -> list[str]:
    """pytest-xdist workers, one per core up to 4: most tests wait on brokers, servers and child
    processes, so two workers on two cores halve the wall time. `-n 0` (or any `-n`) overrides."""
    if any(arg == "-n" or arg.startswith(("-n", "--numprocesses")) for arg in extra):
        return []
    return ["-n", str(min(4, os.cpu_count() or 1)), "--dist", "worksteal"]


def main() -> None:
    verb = sys.argv[1] if len(sys.argv) > 1 else "help"
    extra = sys.argv[2:]
    if verb not in {"setup", "demo", "test", "lint", "bench", "simulate"}:
        sys.exit(__doc__)
    setup()
    if verb == "demo":
        run([str(PY), "examples/demo.py", *extra], child_handles_ctrl_c=True)
    elif verb == "test":
        run([str(PY), "-m", "pytest", *parallel(extra), *extra])
    elif verb == "lint":
        run([str(PY), "-m", "ruff", "check", "src", "tests", "examples", "bench"])
        run([str(PY), "-m", "ruff", "format", "--check", "src", "tests", "examples", "bench"])
        run([str(PY), "-m", "mypy"])
    elif verb == "simulate":
        run([str(PY), "-m", "tests.simulation", *extra])
    elif verb == "bench":
        for script in sorted((ROOT / "bench").glob("*.py")):
            if script.name in NOT_BENCHMARKS:
                continue
            run([str(PY), str(script), *extra])


if __name__ == "__main__":
    main()
