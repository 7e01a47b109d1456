"""The bounded JSON reader: every hostile document is INVALID_ARGUMENT (or 413) with a path."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llama_mapper.domain import jsonio
from llama_mapper.domain.errors import InvalidArgument, MapperError, PayloadTooLarge


@pytest.mark.parametrize("depth", [65, 1000, 5000, 100_000])
def test_deep_nesting_is_refused_not_a_recursion_error(depth):
    for opener, closer in (("[", "]"), ('{"a":', "}")):
        text = opener * depth + "1" + closer * depth
        with pytest.raises(InvalidArgument, match="nested deeper than 64"):
            jsonio.loads(text)


def test_limits_name_the_path():
    with pytest.raises(InvalidArgument, match=r"\$\.a\.b\[1\]: a string of 11 characters"):
        jsonio.loads('{"a": {"b": ["x", "hello world"]}}', limits=jsonio.JsonLimits(max_string=10))
    with pytest.raises(PayloadTooLarge):
        jsonio.loads("[" + "1," * 1000 + "1]", limits=jsonio.JsonLimits(max_bytes=100))
    with pytest.raises(InvalidArgument, match="more than 10 values"):
        jsonio.loads(json.dumps(list(range(20))), limits=jsonio.JsonLimits(max_nodes=10))
    with pytest.raises(InvalidArgument, match="NUL"):
        jsonio.loads('{"k": "a\\u0000b"}', limits=jsonio.JsonLimits(allow_nul=False))
    assert jsonio.loads('{"k": "a\\u0000b"}') == {"k": "a\x00b"}


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"x": -Infinity}'])
def test_nan_and_infinity_are_not_json(text):
    with pytest.raises(InvalidArgument, match="not JSON"):
        jsonio.loads(text)


def test_parsed_values_are_checked_without_recursion():
    deep: list = []
    node = deep
    for _ in range(10_000):
        node.append([])
        node = node[0]
    with pytest.raises(InvalidArgument, match="nested deeper"):
        jsonio.check(deep)
    with pytest.raises(InvalidArgument, match="not a JSON number"):
        jsonio.check({"score": float("nan")})
    with pytest.raises(InvalidArgument, match="not a JSON value"):
        jsonio.check({"x": object()})
    assert jsonio.check({"ok": [1, 2.5, True, None, "s"]}) == {"ok": [1, 2.5, True, None, "s"]}


def test_bytes_must_be_utf8():
    with pytest.raises(InvalidArgument, match="not UTF-8"):
        jsonio.loads(b'{"a": "\xff"}')


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_any_input_is_a_value_or_a_mapper_error(data):
    try:
        jsonio.loads(data)
    except MapperError as exc:
        assert exc.code == "INVALID_ARGUMENT"
