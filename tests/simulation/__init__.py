"""Deterministic simulation of the engine (the FoundationDB/TigerBeetle method).

One seed drives the real `StateMachine` on the memory store with a `ManualClock`, real perdure
SDK handlers stepped through the protocol VM, a simulated network between them and a simulated
Kafka partition log — all scheduled by one `random.Random(seed)`, so a seed replays exactly.
Faults (attempt crashes, lost and duplicated messages, delayed notifications, store crashes)
are injected while invariants are checked after every step (`invariants.py`).

    .venv/bin/python -m tests.simulation --seeds 200       # or: python3 dev.py simulate --seeds 200
    .venv/bin/python -m tests.simulation --seeds 1 --seed 1234 -v   # replay one seed, narrating it

It lives under `tests/` rather than `perdure.testing`: it tests the engine's internals (the
state machine, the memory store's tables) and is not an API users build on.
"""
