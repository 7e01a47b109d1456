"""Property tests: every detector reader on arbitrary JSON and on documented outputs with one part
replaced; the bounded JSON reader's limits; instances of every schema in schemas/ through the code
that reads them. Nothing raises but the domain's InvalidArgument (NotFound for a detector nobody
reads), and what comes out is schema-valid."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.internal.conjecture import utils as conjecture_utils
from hypothesis_jsonschema import _from_schema, from_schema

from llama_mapper.domain import jsonio
from llama_mapper.domain.crosswalks import add_crosswalks, default_crosswalks
from llama_mapper.domain.errors import InvalidArgument, MapperError, NotFound, PayloadTooLarge
from llama_mapper.domain.readers.base import MAX_RAW_LABEL_CHARS, known_detectors, read
from llama_mapper.domain.readers.generic import read_generic
from llama_mapper.domain.rules import RulesMapper
from llama_mapper.domain.schemas import SCHEMA_NAMES, load_schema, validate
from tests.unit.hostile.tally import SECRETS

ROOT = Path(__file__).resolve().parents[3]


class _LoopMany:
    """hypothesis-jsonschema 0.23 drives `many` as `while elements.more()`; Hypothesis 6.150+
    only offers `with many(...) as elements: for _ in elements`. The same draws, the old shape."""

    def __init__(self, data, **sizes):
        self._many = conjecture_utils.many(data, **sizes)
        self._many.__enter__()
        self._elements = iter(self._many)

    def more(self) -> bool:
        if next(self._elements, StopIteration) is StopIteration:
            self._many.__exit__(None, None, None)
            return False
        return True

    def reject(self) -> None:
        self._many.reject()


if not hasattr(conjecture_utils.many, "more"):
    _from_schema.cu = type("cu", (), {"many": _LoopMany})
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(SECRETS)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=12) | st.sampled_from(SECRETS), children, max_size=5)
    ),
    max_leaves=25,
)


def _seeds() -> list[tuple[str, object]]:
    """One documented output per detector (examples/) and the recorded conformance payloads."""
    seeds = []
    for line in (ROOT / "examples" / "detector-outputs.jsonl").read_text().splitlines():
        if line.strip():
            envelope = json.loads(line)
            seeds.append((envelope["detector"], envelope["output"]))
    for path in sorted((ROOT / "tests" / "unit" / "fixtures" / "readers").rglob("*.json")):
        fixture = json.loads(path.read_text())
        seeds.append((fixture["detector"], fixture["output"]))
    return seeds


SEEDS = _seeds()


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _paths(child, (*prefix, i))


def _replace(value, path, new):
    if not path:
        return new
    value = copy.deepcopy(value)
    target = value
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return value


def _check_report(detector, output):
    """read() answers or refuses with InvalidArgument; what it answers is bounded and, through
    the rules, a schema-valid result without planted secrets."""
    try:
        report = read(detector, output)
    except InvalidArgument:
        return
    for finding in report.findings:
        assert isinstance(finding.raw_label, str) and len(finding.raw_label) <= MAX_RAW_LABEL_CHARS
        assert not any(secret in finding.raw_label for secret in SECRETS), finding.raw_label
        if finding.score is not None:
            assert 0.0 <= finding.score <= 1.0
        if finding.span is not None:
            assert 0 <= finding.span.start <= finding.span.end
    result = RulesMapper().map(detector, output)
    validate("mapper-output", result)
    text = json.dumps(result)
    assert not any(secret in text for secret in SECRETS)


@pytest.mark.parametrize("detector", known_detectors())
@SETTINGS
@given(output=json_values)
def test_every_reader_on_arbitrary_json(detector, output):
    _check_report(detector, output)


@pytest.mark.parametrize("detector", known_detectors())
@SETTINGS
@given(output=st.text(max_size=200) | st.sampled_from(["", "[", "{}", "null", "1e999", "NaN"]))
def test_every_reader_on_text(detector, output):
    _check_report(detector, output)


@SETTINGS
@given(data=st.data(), seed=st.sampled_from(range(len(SEEDS))), new=json_values)
def test_documented_outputs_with_one_part_replaced(data, seed, new):
    detector, output = SEEDS[seed]
    path = data.draw(st.sampled_from(list(_paths(output))))
    _check_report(detector, _replace(output, path, new))


# Every part of every documented output, replaced by each value of a kind a reader must not trip
# on (unhashable where a string is compared with a set, non-finite where an int is taken, a lone
# surrogate, a planted secret): deterministic, so a crash the random draws miss is still found.
TRIP_VALUES = [
    [],
    {},
    [SECRETS[0]],
    {"k": [SECRETS[0]]},
    float("inf"),
    float("nan"),
    2**70,
    "\ud800",
]


def test_every_part_of_every_documented_output_replaced_by_a_tripping_value():
    crashes = []
    for detector, output in SEEDS:
        for path in _paths(output):
            for value in TRIP_VALUES:
                try:
                    _check_report(detector, _replace(output, path, value))
                except InvalidArgument:
                    continue  # refused with a path: what bad input gets
                except Exception as exc:
                    crashes.append(f"{detector} {path} {value!r}: {type(exc).__name__}: {exc}")
    assert not crashes, "\n".join(crashes[:20])


@SETTINGS
@given(output=json_values, detector=st.sampled_from(["acme", "my-dlp", "x"]))
def test_the_generic_reader_on_arbitrary_json(output, detector):
    try:
        findings = read_generic(detector, output)
    except InvalidArgument:
        return
    for finding in findings:
        assert len(finding.raw_label) <= MAX_RAW_LABEL_CHARS
        assert not any(secret in finding.raw_label for secret in SECRETS)
        reason = str(finding.attributes.get("reason", ""))
        assert not any(secret in reason for secret in SECRETS), reason


@settings(max_examples=60, deadline=None)
@given(value=json_values)
def test_jsonio_round_trips_what_fits(value):
    assert jsonio.loads(json.dumps(value)) == value
    assert jsonio.loads(json.dumps(value).encode()) == value


@settings(max_examples=60, deadline=None)
@given(
    depth=st.integers(min_value=0, max_value=3000),
    openers=st.text(alphabet="[{", min_size=1, max_size=4),
    limit=st.integers(min_value=1, max_value=80),
)
def test_jsonio_depth_limit_holds_at_any_depth(depth, openers, limit):
    text, closers = "", ""
    for i in range(depth):
        opener = openers[i % len(openers)]
        text += opener if opener == "[" else '{"k":'
        closers = ("]" if opener == "[" else "}") + closers
    text += "0" + closers
    limits = jsonio.JsonLimits(max_depth=limit)
    if depth > limit:
        with pytest.raises(InvalidArgument, match="nested deeper"):
            jsonio.loads(text, limits=limits)
    else:
        jsonio.loads(text, limits=limits)


@settings(max_examples=60, deadline=None)
@given(
    value=json_values,
    max_bytes=st.integers(min_value=1, max_value=400),
    max_string=st.integers(min_value=0, max_value=50),
    max_nodes=st.integers(min_value=1, max_value=40),
)
def test_jsonio_size_string_and_node_limits(value, max_bytes, max_string, max_nodes):
    text = json.dumps(value)
    limits = jsonio.JsonLimits(max_bytes=max_bytes, max_string=max_string, max_nodes=max_nodes)
    try:
        parsed = jsonio.loads(text, limits=limits)
    except PayloadTooLarge:
        assert len(text) > max_bytes
        return
    except InvalidArgument as exc:
        assert "values" in exc.message or "characters" in exc.message, exc.message
        return
    assert len(text) <= max_bytes
    strings, nodes, stack = [], 0, [parsed]
    while stack:
        item = stack.pop()
        nodes += 1
        if isinstance(item, str):
            strings.append(item)
        elif isinstance(item, dict):
            strings.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    assert nodes <= max_nodes and all(len(s) <= max_string for s in strings)


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_jsonio_refuses_with_invalid_argument_only(data):
    try:
        jsonio.loads(data)
    except MapperError as exc:
        assert isinstance(exc, InvalidArgument), type(exc)


# --- every schema in schemas/, through what reads it ---------------------------------------------


def _inline(node, document, name, depth=0):
    """The schema with every $ref replaced by what it names (across files), for hypothesis."""
    if isinstance(node, list):
        return [_inline(item, document, name, depth) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        ref = node["$ref"]
        file, _, pointer = ref.partition("#")
        target_name = file.removesuffix(".json") if file else name
        target_doc = load_schema(target_name) if file else document
        target = target_doc
        for part in [p for p in pointer.split("/") if p]:
            target = target[part]
        rest = {k: v for k, v in node.items() if k != "$ref"}
        return _inline({**target, **rest}, target_doc, target_name, depth + 1)
    return {
        k: _inline(v, document, name, depth)
        for k, v in node.items()
        if k not in ("$schema", "$id", "$defs")
    }


def schema_strategy(name):
    schema = load_schema(name)
    return from_schema(_inline(schema, schema, name))


def test_every_schema_is_covered():
    assert set(SCHEMA_NAMES) | {"training-config"} <= set(COVERED)


def _http(path, body):
    from tests.unit.hostile.test_http import _post

    content = json.dumps(body).encode()
    return asyncio.run(_post(path, content=content, headers={"content-type": "application/json"}))


@SETTINGS
@given(envelope=schema_strategy("detector-output"))
def test_detector_output_instances_are_answered_over_http_and_by_the_rules(envelope):
    response = _http("/v1/map", envelope)
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        validate("mapper-output", response.json()["result"])
    with contextlib.suppress(InvalidArgument, NotFound):
        validate("mapper-output", RulesMapper().map(envelope["detector"], envelope["output"]))


@SETTINGS
@given(document=schema_strategy("document-input"))
def test_document_input_instances_are_answered_over_http(document):
    response = _http("/v1/map/document", document)
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        validate("document-output", response.json()["result"])


@pytest.mark.parametrize("name", ["mapper-output", "document-output"])
@settings(SETTINGS, max_examples=10)  # these schemas are slow to draw from
@given(data=st.data())
def test_result_instances_take_crosswalks(name, data):
    """What reads a result (crosswalks, on the CLI and both HTTP routes) accepts any valid one."""
    result = data.draw(schema_strategy(name))
    schemes = sorted(default_crosswalks().schemes)[:2]
    with contextlib.suppress(InvalidArgument):
        validate(name, add_crosswalks(result, schemes, schema=name))


@SETTINGS
@given(assessment=schema_strategy("analyst-output"))
def test_analyst_output_instances_are_served(assessment):
    """Whatever valid assessment the model produced, the analyst's answer is served as 200 (the
    rubric may overrule it)."""
    from tests.unit.hostile import test_http

    original = test_http.ASSESSMENT
    test_http.ASSESSMENT = assessment
    try:
        response = _http(
            "/v1/analyze", {"framework": "GDPR", "finding": {"label": "pii.email_address"}}
        )
    finally:
        test_http.ASSESSMENT = original
    assert response.status_code == 200, response.text
    validate("analyst-output", response.json()["assessment"])


@SETTINGS
@given(context=schema_strategy("analyst-context"))
def test_analyst_context_instances_are_answered(context):
    """Whatever valid context (volume, location, ...) a caller sends with a finding: an answer,
    or a 4xx naming what the schema cannot say (a co-label outside the taxonomy)."""
    body = {"framework": "GDPR", "finding": {"label": "pii.email_address"}, "context": context}
    response = _http("/v1/analyze", body)
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        validate("analyst-output", response.json()["assessment"])
    else:
        assert "$.context" in response.json()["error"]["message"], response.text


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(config=schema_strategy("training-config"))
def test_training_config_instances_load_and_validate(config):
    from llama_mapper._proto.validation.v1 import validation_pb2 as vpb
    from llama_mapper.training.config import load_config
    from llama_mapper.validation.servicer import to_request

    with contextlib.suppress(InvalidArgument):
        load_config(config)
    message = vpb.ValidationInput(
        dataset_uri="/nonexistent", training_config_json=json.dumps(config)
    )
    assert to_request(message).config == config


@SETTINGS
@given(data=st.data(), name=st.sampled_from(["analyst-example", "mapper-example"]))
def test_training_example_instances_pass_the_validator(data, name):
    """The dataset rows (analyst-example, mapper-example) validate as the validation checks do."""
    row = data.draw(schema_strategy(name))
    validate(name, row)


COVERED = {
    "analyst-context",
    "detector-output",
    "document-input",
    "mapper-output",
    "document-output",
    "analyst-output",
    "training-config",
    "analyst-example",
    "mapper-example",
}
