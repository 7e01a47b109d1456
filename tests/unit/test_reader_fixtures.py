"""Conformance: every recorded native payload (tests/unit/fixtures/readers/<detector>/<version>.json)
reads and maps to the labels it is recorded with, and none of its detected content survives.

A fixture is one payload version of a vendor's documented output, with the detected content
replaced by obviously fake values: `output` (the native output), `expected` (the taxonomy the
shipped tables give it), `secrets` (strings of the payload that must never reach the result),
`payload_version` and `source` (where the shape comes from). When a vendor changes its schema,
record the new version as a new file: the old one keeps failing or passing on its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llama_mapper.domain.readers.base import read
from llama_mapper.domain.rules import RulesMapper

FIXTURES = Path(__file__).parent / "fixtures" / "readers"
PAYLOADS = sorted(FIXTURES.glob("*/*.json"))


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def mapper() -> RulesMapper:
    return RulesMapper()


def test_every_fixture_names_its_source_and_version() -> None:
    assert PAYLOADS
    for path in PAYLOADS:
        doc = load(path)
        assert doc["detector"] == path.parent.name, path
        assert doc["payload_version"] and doc["source"], path
        assert isinstance(doc["secrets"], list) and isinstance(doc["expected"], list), path


@pytest.mark.parametrize("path", PAYLOADS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_payload_version_maps_to_its_recorded_labels(path: Path, mapper: RulesMapper) -> None:
    doc = load(path)
    result = mapper.map(doc["detector"], doc["output"], request_id="conformance")
    assert result["taxonomy"] == doc["expected"]
    assert not result["needs_review"], [f for f in result["findings"] if f.get("needs_review")]


@pytest.mark.parametrize("path", PAYLOADS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_no_detected_content_reaches_the_result(path: Path, mapper: RulesMapper) -> None:
    doc = load(path)
    report = read(doc["detector"], doc["output"])
    result = mapper.map(doc["detector"], doc["output"], request_id="conformance")
    dumped = json.dumps(result) + repr(report)
    for secret in doc["secrets"]:
        assert secret not in dumped, secret


@pytest.mark.parametrize("path", PAYLOADS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_payload_reads_the_same_as_json_text(path: Path) -> None:
    doc = load(path)
    output = doc["output"]
    text = output if isinstance(output, str) else json.dumps(output)
    assert read(doc["detector"], text) == read(doc["detector"], output)
