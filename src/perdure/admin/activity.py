"""`GET /activity`: invocations per status now, and per time bucket over the last minutes how many
were created, completed and failed — what a console's overview charts.

Every figure comes from the store, so the chart survives restarts and agrees with the invocation
list. Each bucket is counted with an index range scan on a SQLite store: creations on
`(status, created_at)`, completions on `(status, modified_at)` (a completed invocation's
`modified_at` is its completion time); only completed records in the window are decoded, to tell
failures from successes. Purged and expired invocations no longer count.
"""

from __future__ import annotations

from typing import Any

from perdure.admin.http import int_param, only
from perdure.admin.query import Database
from perdure.admin.render import timestamp
from perdure.storage.api import Reader, Status

DEFAULT_MINUTES = 15
MAX_MINUTES = 24 * 60
#: Buckets per window: a minute each for the default 15 minutes, wider for longer windows.
_BUCKETS = 15

_STATUSES = ", ".join(f"'{s.value}'" for s in Status)
_SQL = f"""
SELECT 'created', (created_at - :start) / :width, count(*), 0 FROM perdure_invocation
    WHERE status IN ({_STATUSES}) AND created_at >= :start GROUP BY 2
UNION ALL
SELECT 'completed', (modified_at - :start) / :width, count(*), sum(perdure_failed(record))
    FROM perdure_invocation WHERE status = 'completed' AND modified_at >= :start GROUP BY 2
"""


def window(query: dict[str, str]) -> int:
    """`?minutes=` (1 to 1440, default 15), validated."""
    only(query, "minutes")
    return int_param(query, "minutes", DEFAULT_MINUTES, MAX_MINUTES)


async def activity(database: Database, reader: Reader, now_ms: int, minutes: int) -> dict[str, Any]:
    """Counts per status, and `_BUCKETS` buckets ending with the one holding `now_ms`."""
    width = max(1000, minutes * 60_000 // _BUCKETS)
    start = (now_ms // width + 1) * width - _BUCKETS * width
    buckets = [{"start": timestamp(start + i * width), "created": 0, "completed": 0, "failed": 0}
               for i in range(_BUCKETS)]  # fmt: skip
    result = await database.run(_SQL, {"start": start, "width": width})
    for kind, index, count, failed in result.rows:
        if 0 <= index < _BUCKETS:
            buckets[index][kind] = count
            if kind == "completed":
                buckets[index]["failed"] = failed or 0
    counts = reader.count_invocations()
    return {
        "counts": {status.value: counts[status] for status in Status},
        "bucket_seconds": width / 1000,
        "buckets": buckets,
    }
