"""Serdes chosen from type hints; inputs are validated against the type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

import msgspec
import pydantic
import pytest

from perdure.errors import SerdeError
from perdure.sdk import serde


@dataclass
class Point:
    x: int
    y: int = 0


class Struct(msgspec.Struct):
    name: str


class Dict(TypedDict):
    a: int


class Model(pydantic.BaseModel):
    n: int


@pytest.mark.parametrize(
    ("type_", "value", "encoded"),
    [
        (int, 5, b"5"),
        (str, "hi", b'"hi"'),
        (list[int], [1, 2], b"[1,2]"),
        (Point, Point(1, 2), b'{"x":1,"y":2}'),
        (Struct, Struct("a"), b'{"name":"a"}'),
        (Dict, {"a": 1}, b'{"a":1}'),
        (Model, Model(n=3), b'{"n":3}'),
        (bytes, b"\x00raw", b"\x00raw"),
        (dict[str, Any], {"k": [1]}, b'{"k":[1]}'),
    ],
)
def test_round_trip(type_: Any, value: Any, encoded: bytes) -> None:
    s = serde.for_type(type_)
    assert s.encode(value) == encoded
    assert s.decode(encoded) == value


def test_wrong_shape_is_rejected_with_the_type_name() -> None:
    with pytest.raises(SerdeError, match="does not match Point"):
        serde.for_type(Point).decode(b'{"x":"not an int"}')
    with pytest.raises(SerdeError, match="not valid JSON"):
        serde.for_type(int).decode(b"12 garbage")
    with pytest.raises(SerdeError, match="does not match Model"):
        serde.for_type(Model).decode(b'{"n":"x"}')


def test_content_types_and_schemas() -> None:
    assert serde.for_type(bytes).content_type == "application/octet-stream"
    assert serde.for_type(Point).content_type == "application/json"
    schema = serde.for_type(Point).json_schema()
    assert schema is not None and "Point" in str(schema)
    assert serde.for_type(None).decode(b"") is None
    with pytest.raises(SerdeError, match="takes no input"):
        serde.for_type(None).decode(b"5")
