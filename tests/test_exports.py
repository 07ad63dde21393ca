"""The public surface is deliberate: adding or removing a name is a visible change."""

import perdure
import perdure.testing


def test_top_level_exports() -> None:
    assert sorted(perdure.__all__) == sorted(
        [
            "App",
            "Clock",
            "ConflictError",
            "Context",
            "DurablePromise",
            "Engine",
            "HandlerOptions",
            "InvalidInputError",
            "JournalMismatchError",
            "KafkaSubscription",
            "ManualClock",
            "ObjectContext",
            "ObjectSharedContext",
            "PerdureError",
            "Request",
            "RetryPolicy",
            "SerdeError",
            "Service",
            "SystemClock",
            "TerminalError",
            "UnknownTargetError",
            "VirtualObject",
            "Workflow",
            "WorkflowContext",
            "WorkflowSharedContext",
            "__version__",
            "gather",
            "select",
        ]
    )
    for name in perdure.__all__:
        assert hasattr(perdure, name), name


def test_testing_exports() -> None:
    assert sorted(perdure.testing.__all__) == ["Harness", "JournalEntry", "ManualClock", "Status"]
