"""Which PostgreSQL client for perdure's store: psycopg 3 or asyncpg, measured on its two access patterns.

1. Point reads on the event loop thread (a cache miss of a partition's view while the state machine
   applies a command): one row by primary key, one at a time, as the loop would issue them.
2. Batch commits (a partition's group commit): ~1,250 commands' worth of rows — 250 invocations,
   2,250 journal entries, 250 state rows — upserted with one statement per table, in one
   transaction, 40 times: rows as array parameters (`unnest`), as a COPY into temporary tables
   then a merge, or as one JSON parameter per table (what perdure does); and commits of one
   invocation's rows, where the temporary tables' cost at every commit shows.

Prints one table: latency per read, transactions/s and client CPU per transaction for each client.
Creates and drops its own database on 127.0.0.1:5432 (user postgres).

    .venv/bin/python bench/pg_clients.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import asyncpg
import msgspec
import psycopg

SERVER = "postgresql://postgres@127.0.0.1:5432"
DB = "perdure_bench_clients"
SCHEMA = (
    "CREATE TABLE inv (seq bigint PRIMARY KEY, id text UNIQUE NOT NULL, record bytea NOT NULL)",
    "CREATE TABLE journal (seq bigint, idx int, type int, payload bytea, PRIMARY KEY (seq, idx))",
    "CREATE TABLE state (skey bytea, name bytea, value bytea, PRIMARY KEY (skey, name))",
)
INV = (
    "INSERT INTO inv SELECT * FROM unnest($1::bigint[], $2::text[], $3::bytea[])"
    " ON CONFLICT (seq) DO UPDATE SET record = excluded.record"
)
JOURNAL = (
    "INSERT INTO journal SELECT * FROM unnest($1::bigint[], $2::int[], $3::int[], $4::bytea[])"
    " ON CONFLICT (seq, idx) DO UPDATE SET payload = excluded.payload"
)
STATE = (
    "INSERT INTO state SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bytea[])"
    " ON CONFLICT (skey, name) DO UPDATE SET value = excluded.value"
)
READ = "SELECT record FROM inv WHERE id = $1"


def batch(n: int, rows: int = 250) -> tuple[list[object], list[object], list[object]]:
    base = n * 250
    seqs = list(range(base, base + rows))
    inv = [seqs, [f"inv_{s:033d}" for s in seqs], [os.urandom(300) for _ in seqs]]
    j_seq = [s for s in seqs for _ in range(9)]
    journal = [j_seq, [i for _ in seqs for i in range(9)], [4] * len(j_seq), [os.urandom(60) for _ in j_seq]]
    state = [[os.urandom(16) for _ in seqs], [b"role"] * len(seqs), [b'"admin"'] * len(seqs)]
    return inv, journal, state


def _percent(sql: str) -> str:
    for n in range(4, 0, -1):
        sql = sql.replace(f"${n}", "%s")
    return sql


def psycopg_writes(rounds: int) -> tuple[float, float]:
    with psycopg.connect(f"{SERVER}/{DB}", autocommit=True) as conn:
        batches = [batch(n) for n in range(rounds)]
        started, cpu = time.perf_counter(), time.thread_time()
        for inv, journal, state in batches:
            with conn.pipeline(), conn.transaction():
                conn.execute(_percent(INV), inv)
                conn.execute(_percent(JOURNAL), journal)
                conn.execute(_percent(STATE), state)
        return time.perf_counter() - started, time.thread_time() - cpu


_TEMP = (
    "CREATE TEMP TABLE inv_in (LIKE inv) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE journal_in (LIKE journal) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE state_in (LIKE state) ON COMMIT DELETE ROWS",
)
_COPY = (
    ("inv_in", ["int8", "text", "bytea"], "INSERT INTO inv SELECT * FROM inv_in"
     " ON CONFLICT (seq) DO UPDATE SET record = excluded.record"),
    ("journal_in", ["int8", "int4", "int4", "bytea"], "INSERT INTO journal SELECT * FROM journal_in"
     " ON CONFLICT (seq, idx) DO UPDATE SET payload = excluded.payload"),
    ("state_in", ["bytea", "bytea", "bytea"], "INSERT INTO state SELECT * FROM state_in"
     " ON CONFLICT (skey, name) DO UPDATE SET value = excluded.value"),
)  # fmt: skip


def psycopg_copy_writes(rounds: int, rows: int = 250) -> tuple[float, float]:
    with psycopg.connect(f"{SERVER}/{DB}", autocommit=True) as conn:
        for statement in _TEMP:
            conn.execute(statement)
        offset = 2 if rows == 250 else 4
        batches = [batch(n, rows) for n in range(offset * rounds, (offset + 1) * rounds)]
        started, cpu = time.perf_counter(), time.thread_time()
        for tables in batches:
            with conn.transaction():
                cur = conn.cursor()
                for (table, types, merge), columns in zip(_COPY, tables, strict=True):
                    with cur.copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:
                        copy.set_types(types)
                        for row in zip(*columns, strict=True):
                            copy.write_row(row)
                    cur.execute(merge)
        return time.perf_counter() - started, time.thread_time() - cpu


_JSON = (
    ("INSERT INTO inv SELECT (x->>0)::int8, x->>1, decode(x->>2, 'base64')"
     " FROM jsonb_array_elements(%s::jsonb) x ON CONFLICT (seq) DO UPDATE SET record = excluded.record"),
    ("INSERT INTO journal SELECT (x->>0)::int8, (x->>1)::int4, (x->>2)::int4, decode(x->>3, 'base64')"
     " FROM jsonb_array_elements(%s::jsonb) x"
     " ON CONFLICT (seq, idx) DO UPDATE SET payload = excluded.payload"),
    ("INSERT INTO state SELECT decode(x->>0, 'base64'), decode(x->>1, 'base64'), decode(x->>2, 'base64')"
     " FROM jsonb_array_elements(%s::jsonb) x ON CONFLICT (skey, name) DO UPDATE SET value = excluded.value"),
)  # fmt: skip


def psycopg_json_writes(rounds: int, offset: int = 3, rows: int = 250) -> tuple[float, float]:
    """perdure's way: each table's rows as one JSON parameter, every statement in one pipeline."""
    encode = msgspec.json.Encoder().encode
    with psycopg.connect(f"{SERVER}/{DB}", autocommit=True) as conn:
        batches = [batch(n, rows) for n in range(offset * rounds, (offset + 1) * rounds)]
        started, cpu = time.perf_counter(), time.thread_time()
        for tables in batches:
            with conn.transaction(), conn.pipeline():
                for statement, columns in zip(_JSON, tables, strict=True):
                    conn.execute(statement, (encode(list(zip(*columns, strict=True))).decode(),))
        return time.perf_counter() - started, time.thread_time() - cpu


async def asyncpg_writes(rounds: int) -> tuple[float, float]:
    conn = await asyncpg.connect(f"{SERVER}/{DB}")
    try:
        batches = [batch(n) for n in range(rounds, 2 * rounds)]
        started, cpu = time.perf_counter(), time.thread_time()
        for inv, journal, state in batches:
            async with conn.transaction():
                await conn.execute(INV, *inv)
                await conn.execute(JOURNAL, *journal)
                await conn.execute(STATE, *state)
        return time.perf_counter() - started, time.thread_time() - cpu
    finally:
        await conn.close()


def psycopg_reads(ids: list[str]) -> list[float]:
    with psycopg.connect(f"{SERVER}/{DB}", autocommit=True, prepare_threshold=0) as conn:
        out = []
        for i in ids:
            t = time.perf_counter()
            conn.execute("SELECT record FROM inv WHERE id = %s", (i,)).fetchall()
            out.append(time.perf_counter() - t)
        return out


async def asyncpg_reads(ids: list[str]) -> list[float]:
    conn = await asyncpg.connect(f"{SERVER}/{DB}")
    try:
        stmt = await conn.prepare(READ)
        out = []
        for i in ids:
            t = time.perf_counter()
            await stmt.fetch(i)
            out.append(time.perf_counter() - t)
        return out
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--reads", type=int, default=5000)
    args = parser.parse_args()
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB}")
        admin.execute(f"CREATE DATABASE {DB}")
    try:
        with psycopg.connect(f"{SERVER}/{DB}", autocommit=True) as conn:
            for statement in SCHEMA:
                conn.execute(statement)
        rows: list[tuple[str, str, str]] = []  # (client, measure, result)
        for name, run in (
            ("psycopg 3 (unnest)", lambda: psycopg_writes(args.rounds)),
            ("psycopg 3 (COPY+merge)", lambda: psycopg_copy_writes(args.rounds)),
            ("asyncpg (unnest)", lambda: asyncio.run(asyncpg_writes(args.rounds))),
            ("psycopg 3 (JSON rows)", lambda: psycopg_json_writes(args.rounds)),
        ):
            wall, cpu = run()
            rows.append(
                (
                    name,
                    "batch commit: txn/s (client CPU ms per txn)",
                    f"{args.rounds / wall:,.0f} ({cpu / args.rounds * 1000:.1f})",
                )
            )
        for name, run in (
            ("psycopg 3 (COPY+merge)", lambda: psycopg_copy_writes(200, rows=1)),
            ("psycopg 3 (JSON rows)", lambda: psycopg_json_writes(200, offset=5, rows=1)),
        ):
            wall, _ = run()
            rows.append((name, "one-invocation commit: ms each", f"{wall / 200 * 1000:.2f}"))
        step = max(1, 250 * args.rounds // args.reads)
        ids = [f"inv_{s:033d}" for s in range(0, 250 * args.rounds, step)][: args.reads]
        for name, reads in (
            ("psycopg 3 (sync)", lambda: psycopg_reads(ids)),
            ("asyncpg", lambda: asyncio.run(asyncpg_reads(ids))),
        ):
            lat = sorted(reads())
            p50, p99 = statistics.median(lat) * 1e6, lat[int(len(lat) * 0.99)] * 1e6
            rows.append((name, "point read p50 / p99 us", f"{p50:.0f} / {p99:.0f}"))
        width = max(len(r[1]) for r in rows)
        print(f"{'client':<22}  {'measure':<{width}}  result")
        for client, measure, result in rows:
            print(f"{client:<22}  {measure:<{width}}  {result}")
        print("perdure's partitions read on cache misses inside the synchronous state machine: only a")
        print("synchronous client can do that on the event loop thread (asyncpg cannot be awaited there).")
    finally:
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DB}")


if __name__ == "__main__":
    main()
