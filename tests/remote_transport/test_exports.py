"""perdure.runtime.remote's surface is deliberate: the engine needs the invoker and its options."""

import perdure.runtime.remote


def test_remote_exports() -> None:
    assert sorted(perdure.runtime.remote.__all__) == ["RemoteInvoker", "RemoteOptions"]
    for name in perdure.runtime.remote.__all__:
        assert getattr(perdure.runtime.remote, name).__module__.startswith("perdure.runtime.remote.")
