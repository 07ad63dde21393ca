"""Serializers chosen from type hints: JSON by default, raw for `bytes`.

JSON covers everything msgspec understands (primitives, dataclasses, msgspec Structs, TypedDicts,
lists, dicts, unions, enums, datetimes) plus pydantic models when pydantic is installed. A
handler's input is decoded *and validated* against its type, so malformed input is rejected
before any user code runs.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from perdure.errors import SerdeError

JSON = "application/json"
OCTETS = "application/octet-stream"


class Serde(Protocol):
    """Turns values into bytes and back."""

    @property
    def content_type(self) -> str | None: ...

    def encode(self, value: Any) -> bytes: ...
    def decode(self, data: bytes) -> Any: ...
    def json_schema(self) -> dict[str, Any] | None: ...


class BytesSerde:
    """Passes bytes through unchanged (handlers annotated with `bytes`)."""

    content_type: str | None = OCTETS

    def encode(self, value: Any) -> bytes:
        if value is None:
            return b""
        if not isinstance(value, bytes | bytearray | memoryview):
            raise SerdeError(f"expected bytes, got {type(value).__name__}")
        return bytes(value)

    def decode(self, data: bytes) -> bytes:
        return data

    def json_schema(self) -> dict[str, Any] | None:
        return None


class NoneSerde:
    """No value: the empty body (handlers without an input parameter, or returning None)."""

    content_type: str | None = None

    def encode(self, value: Any) -> bytes:
        return b""

    def decode(self, data: bytes) -> None:
        if data.strip() not in (b"", b"null"):
            raise SerdeError("this handler takes no input, but a body was sent")
        return None

    def json_schema(self) -> dict[str, Any] | None:
        return {"type": "null"}


_ENCODER = msgspec.json.Encoder()


@dataclass(frozen=True)
class JsonSerde:
    """JSON via msgspec, validating against `type_` on decode. `Any` accepts any JSON."""

    type_: Any = Any
    content_type: str | None = JSON

    def __post_init__(self) -> None:
        object.__setattr__(self, "_decoder", msgspec.json.Decoder(self.type_))

    def encode(self, value: Any) -> bytes:
        try:
            return _ENCODER.encode(value)
        except (TypeError, msgspec.EncodeError) as e:
            raise SerdeError(f"cannot encode {type(value).__name__} as JSON: {e}") from e

    def decode(self, data: bytes) -> Any:
        if not data:
            data = b"null"
        try:
            return self._decoder.decode(data)  # type: ignore[attr-defined]
        except msgspec.ValidationError as e:
            raise SerdeError(f"input does not match {_type_name(self.type_)}: {e}") from e
        except msgspec.DecodeError as e:
            raise SerdeError(f"input is not valid JSON: {e}") from e

    def json_schema(self) -> dict[str, Any] | None:
        if self.type_ is Any:
            return {}
        try:
            return msgspec.json.schema(self.type_)
        except (TypeError, ValueError):
            return {}


@dataclass(frozen=True)
class PydanticSerde:
    """JSON for pydantic models (when pydantic is installed)."""

    model: Any
    content_type: str | None = JSON

    def encode(self, value: Any) -> bytes:
        return bytes(value.model_dump_json().encode())

    def decode(self, data: bytes) -> Any:
        try:
            return self.model.model_validate_json(data or b"null")
        except Exception as e:  # pydantic.ValidationError; pydantic is optional
            raise SerdeError(f"input does not match {self.model.__name__}: {e}") from e

    def json_schema(self) -> dict[str, Any] | None:
        return dict(self.model.model_json_schema())


def _type_name(type_: Any) -> str:
    return getattr(type_, "__name__", None) or repr(type_)


def _is_pydantic(type_: Any) -> bool:
    return inspect.isclass(type_) and any(
        base.__module__.startswith("pydantic") and base.__name__ == "BaseModel" for base in type_.__mro__
    )


def for_type(type_: Any) -> Serde:
    """The serde for a type hint (`inspect.Parameter.empty` means 'not annotated': any JSON)."""
    if type_ is None or type_ is type(None):
        return NoneSerde()
    if type_ is bytes:
        return BytesSerde()
    if type_ is inspect.Parameter.empty or type_ is inspect.Signature.empty:
        return JsonSerde(Any)
    if _is_pydantic(type_):
        return PydanticSerde(type_)
    try:
        return JsonSerde(type_)
    except TypeError as e:
        raise SerdeError(f"perdure cannot serialize {_type_name(type_)} as JSON: {e}") from e


JSON_ANY = JsonSerde(Any)
