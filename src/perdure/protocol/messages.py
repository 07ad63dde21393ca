"""Restate service protocol messages (V5–V7), built at import time from a field table.

The wire format is Restate's `protocol.proto`; we describe the same messages and field numbers
here as data and let protobuf build the classes, so no generated code is checked in and no
`protoc` is needed. Every class in `BY_TYPE` is a real protobuf message (upb-backed).

Field specs are `(name, number, type)` or `(name, number, type, oneof)`. A type starting with
`*` is repeated, with `?` is proto3 `optional` (has presence); lower-case names are scalars,
capitalised names refer to other messages in this table.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "dev.restate.service.protocol"

_Field = tuple[str, int, str] | tuple[str, int, str, str]

_NOTIFICATION_RESULT = "result"

# Shared nested messages.
_NESTED: dict[str, list[_Field]] = {
    "Void": [],
    "Value": [("content", 1, "bytes")],
    "FailureMetadata": [("key", 1, "string"), ("value", 2, "string")],
    "Failure": [("code", 1, "uint32"), ("message", 2, "string"), ("metadata", 3, "*FailureMetadata")],
    "Header": [("key", 1, "string"), ("value", 2, "string")],
    "StateKeys": [("keys", 1, "*bytes")],
    "StateEntry": [("key", 1, "bytes"), ("value", 2, "bytes")],
    "WorkflowTarget": [("workflow_name", 1, "string"), ("workflow_key", 2, "string")],
    "IdempotentRequestTarget": [
        ("service_name", 1, "string"),
        ("service_key", 2, "?string"),
        ("handler_name", 3, "string"),
        ("idempotency_key", 4, "string"),
    ],
    "Future": [
        ("waiting_completions", 1, "*uint32"),
        ("waiting_signals", 2, "*uint32"),
        ("waiting_named_signals", 3, "*string"),
        ("nested_futures", 4, "*Future"),
        ("combinator_type", 5, "uint32"),
    ],
}

_TARGET: list[_Field] = [
    ("invocation_id", 1, "string", "target"),
    ("idempotent_request_target", 3, "IdempotentRequestTarget", "target"),
    ("workflow_target", 4, "WorkflowTarget", "target"),
]


def _completion(*results: tuple[str, int, str]) -> list[_Field]:
    return [("completion_id", 1, "uint32"), *((n, i, t, "result") for n, i, t in results)]


_VOID = ("void", 4, "Void")
_VALUE = ("value", 5, "Value")
_FAILURE = ("failure", 6, "Failure")

# (type code, message name, fields)
_FRAMES: list[tuple[int, str, list[_Field]]] = [
    # --- control frames
    (
        0x0000,
        "StartMessage",
        [
            ("id", 1, "bytes"),
            ("debug_id", 2, "string"),
            ("known_entries", 3, "uint32"),
            ("state_map", 4, "*StateEntry"),
            ("partial_state", 5, "bool"),
            ("key", 6, "string"),
            ("retry_count_since_last_stored_entry", 7, "uint32"),
            ("duration_since_last_stored_entry", 8, "uint64"),
            ("random_seed", 9, "uint64"),
        ],
    ),
    # Fields 1-3 are the V5/V6 flat lists; field 4 is V7's future tree. We read both.
    (
        0x0001,
        "SuspensionMessage",
        [
            ("waiting_completions", 1, "*uint32"),
            ("waiting_signals", 2, "*uint32"),
            ("waiting_named_signals", 3, "*string"),
            ("awaiting_on", 4, "Future"),
        ],
    ),
    (
        0x0002,
        "ErrorMessage",
        [
            ("code", 1, "uint32"),
            ("message", 2, "string"),
            ("stacktrace", 3, "string"),
            ("related_command_index", 4, "?uint32"),
            ("related_command_name", 5, "?string"),
            ("related_command_type", 6, "?uint32"),
            ("next_retry_delay", 8, "?uint64"),
            ("behavior", 9, "uint32"),  # V7: 0 retry, 1 pause, 2 fail (ERROR_RETRY, …)
        ],
    ),
    (0x0003, "EndMessage", []),
    (0x0004, "CommandAckMessage", [("command_index", 1, "uint32")]),
    (
        0x0005,
        "ProposeRunCompletionMessage",
        [
            ("result_completion_id", 1, "uint32"),
            ("value", 14, "bytes", "result"),
            ("failure", 15, "Failure", "result"),
        ],
    ),
    (0x0006, "AwaitingOnMessage", [("awaiting_on", 1, "Future"), ("executing_side_effects", 2, "bool")]),
    (0x0007, "ProposeRunCompletionAckMessage", [("completion_id", 1, "uint32")]),
    # --- commands
    (
        0x0400,
        "InputCommandMessage",
        [("headers", 1, "*Header"), ("value", 14, "Value"), ("name", 12, "string")],
    ),
    (
        0x0401,
        "OutputCommandMessage",
        [
            ("value", 14, "Value", "result"),
            ("failure", 15, "Failure", "result"),
            ("name", 12, "string"),
        ],
    ),
    (
        0x0402,
        "GetLazyStateCommandMessage",
        [
            ("key", 1, "bytes"),
            ("result_completion_id", 11, "uint32"),
            ("name", 12, "string"),
        ],
    ),
    (0x0403, "SetStateCommandMessage", [("key", 1, "bytes"), ("value", 3, "Value"), ("name", 12, "string")]),
    (0x0404, "ClearStateCommandMessage", [("key", 1, "bytes"), ("name", 12, "string")]),
    (0x0405, "ClearAllStateCommandMessage", [("name", 12, "string")]),
    (
        0x0406,
        "GetLazyStateKeysCommandMessage",
        [("result_completion_id", 11, "uint32"), ("name", 12, "string")],
    ),
    (
        0x0407,
        "GetEagerStateCommandMessage",
        [
            ("key", 1, "bytes"),
            ("void", 13, "Void", "result"),
            ("value", 14, "Value", "result"),
            ("name", 12, "string"),
        ],
    ),
    (0x0408, "GetEagerStateKeysCommandMessage", [("value", 14, "StateKeys"), ("name", 12, "string")]),
    (
        0x0409,
        "GetPromiseCommandMessage",
        [
            ("key", 1, "string"),
            ("result_completion_id", 11, "uint32"),
            ("name", 12, "string"),
        ],
    ),
    (
        0x040A,
        "PeekPromiseCommandMessage",
        [
            ("key", 1, "string"),
            ("result_completion_id", 11, "uint32"),
            ("name", 12, "string"),
        ],
    ),
    (
        0x040B,
        "CompletePromiseCommandMessage",
        [
            ("key", 1, "string"),
            ("completion_value", 2, "Value", "completion"),
            ("completion_failure", 3, "Failure", "completion"),
            ("result_completion_id", 11, "uint32"),
            ("name", 12, "string"),
        ],
    ),
    (
        0x040C,
        "SleepCommandMessage",
        [
            ("wake_up_time", 1, "uint64"),
            ("result_completion_id", 11, "uint32"),
            ("name", 12, "string"),
        ],
    ),
    (
        0x040D,
        "CallCommandMessage",
        [
            ("service_name", 1, "string"),
            ("handler_name", 2, "string"),
            ("parameter", 3, "bytes"),
            ("headers", 4, "*Header"),
            ("key", 5, "string"),
            ("idempotency_key", 6, "?string"),
            ("invocation_id_notification_idx", 10, "uint32"),
            ("result_completion_id", 11, "uint32"),
            ("name", 12, "string"),
        ],
    ),
    (
        0x040E,
        "OneWayCallCommandMessage",
        [
            ("service_name", 1, "string"),
            ("handler_name", 2, "string"),
            ("parameter", 3, "bytes"),
            ("invoke_time", 4, "uint64"),
            ("headers", 5, "*Header"),
            ("key", 6, "string"),
            ("idempotency_key", 7, "?string"),
            ("invocation_id_notification_idx", 10, "uint32"),
            ("name", 12, "string"),
        ],
    ),
    (
        0x0410,
        "SendSignalCommandMessage",
        [
            ("target_invocation_id", 1, "string"),
            ("idx", 2, "uint32", "signal_id"),
            ("name", 3, "string", "signal_id"),
            ("void", 4, "Void", "result"),
            ("value", 5, "Value", "result"),
            ("failure", 6, "Failure", "result"),
            ("entry_name", 12, "string"),
        ],
    ),
    (0x0411, "RunCommandMessage", [("result_completion_id", 11, "uint32"), ("name", 12, "string")]),
    (
        0x0412,
        "AttachInvocationCommandMessage",
        [
            *_TARGET,
            ("result_completion_id", 11, "uint32"),
            ("name", 12, "string"),
        ],
    ),
    (
        0x0413,
        "GetInvocationOutputCommandMessage",
        [
            *_TARGET,
            ("result_completion_id", 11, "uint32"),
            ("name", 12, "string"),
        ],
    ),
    (
        0x0414,
        "CompleteAwakeableCommandMessage",
        [
            ("awakeable_id", 1, "string"),
            ("value", 2, "Value", "result"),
            ("failure", 3, "Failure", "result"),
            ("name", 12, "string"),
        ],
    ),
    # --- notifications
    (0x8002, "GetLazyStateCompletionNotificationMessage", _completion(_VOID, _VALUE)),
    (
        0x8006,
        "GetLazyStateKeysCompletionNotificationMessage",
        [
            ("completion_id", 1, "uint32"),
            ("state_keys", 17, "StateKeys"),
        ],
    ),
    (0x8009, "GetPromiseCompletionNotificationMessage", _completion(_VALUE, _FAILURE)),
    (0x800A, "PeekPromiseCompletionNotificationMessage", _completion(_VOID, _VALUE, _FAILURE)),
    (0x800B, "CompletePromiseCompletionNotificationMessage", _completion(_VOID, _FAILURE)),
    (0x800C, "SleepCompletionNotificationMessage", [("completion_id", 1, "uint32"), ("void", 4, "Void")]),
    (0x800D, "CallCompletionNotificationMessage", _completion(_VALUE, _FAILURE)),
    (
        0x800E,
        "CallInvocationIdCompletionNotificationMessage",
        [
            ("completion_id", 1, "uint32"),
            ("invocation_id", 16, "string"),
        ],
    ),
    (0x8011, "RunCompletionNotificationMessage", _completion(_VALUE, _FAILURE)),
    (0x8012, "AttachInvocationCompletionNotificationMessage", _completion(_VALUE, _FAILURE)),
    (0x8013, "GetInvocationOutputCompletionNotificationMessage", _completion(_VOID, _VALUE, _FAILURE)),
    (
        0xFBFF,
        "SignalNotificationMessage",
        [
            ("idx", 2, "uint32", "signal_id"),
            ("name", 3, "string", "signal_id"),
            ("void", 4, "Void", "result"),
            ("value", 5, "Value", "result"),
            ("failure", 6, "Failure", "result"),
        ],
    ),
]

_SCALARS = {
    "bytes": descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
    "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
    "uint32": descriptor_pb2.FieldDescriptorProto.TYPE_UINT32,
    "uint64": descriptor_pb2.FieldDescriptorProto.TYPE_UINT64,
    "bool": descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
}


def _describe(name: str, fields: list[_Field]) -> descriptor_pb2.DescriptorProto:
    msg = descriptor_pb2.DescriptorProto(name=name)
    oneofs: list[str] = []
    for spec in fields:
        fname, number, ftype = spec[0], spec[1], spec[2]
        field = msg.field.add(name=fname, number=number, json_name=fname)
        field.label = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
        if ftype.startswith("*"):
            field.label = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
            ftype = ftype[1:]
        oneof = spec[3] if len(spec) == 4 else None
        if ftype.startswith("?"):
            ftype = ftype[1:]
            field.proto3_optional = True
            oneof = f"_{fname}"
        if oneof is not None:
            if oneof not in oneofs:
                oneofs.append(oneof)
                msg.oneof_decl.add(name=oneof)
            field.oneof_index = oneofs.index(oneof)
        if ftype in _SCALARS:
            field.type = _SCALARS[ftype]
        else:
            field.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
            field.type_name = f".{PACKAGE}.{ftype}"
    return msg


def _build() -> dict[str, Any]:
    file = descriptor_pb2.FileDescriptorProto(name="perdure/protocol.proto", package=PACKAGE, syntax="proto3")
    for name, fields in _NESTED.items():
        file.message_type.append(_describe(name, fields))
    for _, name, fields in _FRAMES:
        file.message_type.append(_describe(name, fields))
    pool = descriptor_pool.DescriptorPool()
    fd = pool.Add(file)
    return {
        name: message_factory.GetMessageClass(fd.message_types_by_name[name])
        for name in [*_NESTED, *(n for _, n, _ in _FRAMES)]
    }


_CLASSES = _build()

# Type aliases: every message class is a protobuf Message; mypy sees them as Any.
Void: Any = _CLASSES["Void"]
Value: Any = _CLASSES["Value"]
Failure: Any = _CLASSES["Failure"]
FailureMetadata: Any = _CLASSES["FailureMetadata"]
Header: Any = _CLASSES["Header"]
StateKeys: Any = _CLASSES["StateKeys"]
StateEntry: Any = _CLASSES["StateEntry"]
WorkflowTarget: Any = _CLASSES["WorkflowTarget"]
IdempotentRequestTarget: Any = _CLASSES["IdempotentRequestTarget"]
Future: Any = _CLASSES["Future"]

StartMessage: Any = _CLASSES["StartMessage"]
SuspensionMessage: Any = _CLASSES["SuspensionMessage"]
ErrorMessage: Any = _CLASSES["ErrorMessage"]
EndMessage: Any = _CLASSES["EndMessage"]
CommandAckMessage: Any = _CLASSES["CommandAckMessage"]
ProposeRunCompletionMessage: Any = _CLASSES["ProposeRunCompletionMessage"]
AwaitingOnMessage: Any = _CLASSES["AwaitingOnMessage"]
ProposeRunCompletionAckMessage: Any = _CLASSES["ProposeRunCompletionAckMessage"]

InputCommand: Any = _CLASSES["InputCommandMessage"]
OutputCommand: Any = _CLASSES["OutputCommandMessage"]
GetLazyStateCommand: Any = _CLASSES["GetLazyStateCommandMessage"]
SetStateCommand: Any = _CLASSES["SetStateCommandMessage"]
ClearStateCommand: Any = _CLASSES["ClearStateCommandMessage"]
ClearAllStateCommand: Any = _CLASSES["ClearAllStateCommandMessage"]
GetLazyStateKeysCommand: Any = _CLASSES["GetLazyStateKeysCommandMessage"]
GetEagerStateCommand: Any = _CLASSES["GetEagerStateCommandMessage"]
GetEagerStateKeysCommand: Any = _CLASSES["GetEagerStateKeysCommandMessage"]
GetPromiseCommand: Any = _CLASSES["GetPromiseCommandMessage"]
PeekPromiseCommand: Any = _CLASSES["PeekPromiseCommandMessage"]
CompletePromiseCommand: Any = _CLASSES["CompletePromiseCommandMessage"]
SleepCommand: Any = _CLASSES["SleepCommandMessage"]
CallCommand: Any = _CLASSES["CallCommandMessage"]
OneWayCallCommand: Any = _CLASSES["OneWayCallCommandMessage"]
SendSignalCommand: Any = _CLASSES["SendSignalCommandMessage"]
RunCommand: Any = _CLASSES["RunCommandMessage"]
AttachInvocationCommand: Any = _CLASSES["AttachInvocationCommandMessage"]
GetInvocationOutputCommand: Any = _CLASSES["GetInvocationOutputCommandMessage"]
CompleteAwakeableCommand: Any = _CLASSES["CompleteAwakeableCommandMessage"]

GetLazyStateCompletion: Any = _CLASSES["GetLazyStateCompletionNotificationMessage"]
GetLazyStateKeysCompletion: Any = _CLASSES["GetLazyStateKeysCompletionNotificationMessage"]
GetPromiseCompletion: Any = _CLASSES["GetPromiseCompletionNotificationMessage"]
PeekPromiseCompletion: Any = _CLASSES["PeekPromiseCompletionNotificationMessage"]
CompletePromiseCompletion: Any = _CLASSES["CompletePromiseCompletionNotificationMessage"]
SleepCompletion: Any = _CLASSES["SleepCompletionNotificationMessage"]
CallCompletion: Any = _CLASSES["CallCompletionNotificationMessage"]
CallInvocationIdCompletion: Any = _CLASSES["CallInvocationIdCompletionNotificationMessage"]
RunCompletion: Any = _CLASSES["RunCompletionNotificationMessage"]
AttachInvocationCompletion: Any = _CLASSES["AttachInvocationCompletionNotificationMessage"]
GetInvocationOutputCompletion: Any = _CLASSES["GetInvocationOutputCompletionNotificationMessage"]
SignalNotification: Any = _CLASSES["SignalNotificationMessage"]

#: message type code -> class, and back
BY_TYPE: dict[int, Any] = {code: _CLASSES[name] for code, name, _ in _FRAMES}
TYPE_OF: dict[Any, int] = {cls: code for code, cls in BY_TYPE.items()}
NAME_OF: dict[int, str] = {code: name.removesuffix("Message") for code, name, _ in _FRAMES}

COMMAND_MIN, COMMAND_MAX = 0x0400, 0x7FFF
NOTIFICATION_MIN, NOTIFICATION_MAX = 0x8000, 0xFBFF
CUSTOM_MIN = 0xFC00

#: Built-in signal ids; user awakeables are numbered from 17.
CANCEL_SIGNAL = 1
FIRST_AWAKEABLE_SIGNAL = 17

#: SDK-side error codes of the protocol.
JOURNAL_MISMATCH = 570
PROTOCOL_VIOLATION = 571
# ErrorMessage.behavior (V7): what the runtime does with a failed attempt.
ERROR_RETRY, ERROR_PAUSE, ERROR_FAIL = 0, 1, 2


def is_command(type_code: int) -> bool:
    """True for journaled commands, including opaque SDK-defined custom ones."""
    return COMMAND_MIN <= type_code <= COMMAND_MAX or type_code >= CUSTOM_MIN


def is_notification(type_code: int) -> bool:
    return NOTIFICATION_MIN <= type_code <= NOTIFICATION_MAX


def type_of(message: Any) -> int:
    """The protocol type code of a message instance."""
    return TYPE_OF[type(message)]
