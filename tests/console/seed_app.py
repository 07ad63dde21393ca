"""The seed example (examples/user_updates.py) as `perdure dev` serves it to the browser tests,
with a longer durable sleep: a new account's first update sleeps CONSOLE_TEST_SLEEP_S (300 s by
default) instead of 5 s, so the pages can be looked at while its key is suspended, with no race
against the wake-up. Everything else is the example unchanged.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

import user_updates  # the seed example

user_updates.RETRY_AFTER = timedelta(seconds=float(os.environ.get("CONSOLE_TEST_SLEEP_S", "300")))
app = user_updates.app
