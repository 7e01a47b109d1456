"""Each validation check passes on good rows and fails, with row ids, on a crafted bad case."""

from __future__ import annotations

import json

import pytest

from llama_mapper.datasets.analyst import analyst_finding
from llama_mapper.domain import rubric
from llama_mapper.domain.errors import InvalidArgument, NotFound, PayloadTooLarge
from llama_mapper.domain.findings import NormalizedFinding
from llama_mapper.domain.frameworks import default_frameworks
from llama_mapper.domain.rows import VENDOR, Candidate, analyst_row, mapper_row
from llama_mapper.domain.taxonomy import default_taxonomy
from llama_mapper.validation import checks
from llama_mapper.validation.checks import Row
from llama_mapper.validation.dataset import load_dataset
from llama_mapper.validation.policy import Policy, effective_policy
from llama_mapper.validation.similarity import near_duplicates

TAXONOMY = default_taxonomy()
POLICY = Policy(min_examples_per_label=2, max_imbalance_ratio=5)


def _mapper(label: str, raw: str, score: float, detector: str = "aws-comprehend") -> Row:
    finding = NormalizedFinding(detector, raw, score=score)
    return Row(
        mapper_row(Candidate.of(finding, (label,), VENDOR), "train"), "mapper-train.jsonl", 1
    )


@pytest.fixture(scope="module")
def good() -> list[Row]:
    rows = [
        _mapper(label, f"{label.split('.')[1].upper()}_{i}", 0.5 + i / 10)
        for label in TAXONOMY.names
        for i in range(2)
    ]
    finding = analyst_finding("financial.credit_card", TAXONOMY, "presidio", "CREDIT_CARD", 0.9)
    assessment = rubric.assess(rubric.query("PCI_DSS", finding), default_frameworks())
    rows.append(Row(analyst_row("PCI_DSS", finding, assessment, "train"), "analyst-train.jsonl", 1))
    return rows


def test_schema(good):
    assert checks.check_schema(good, POLICY).passed
    broken = Row({**good[0].data, "output": 42}, "mapper-train.jsonl", 7)
    result = checks.check_schema([*good, broken], POLICY)
    assert not result.passed
    assert result.offending_row_ids == [broken.ref]


def test_schema_checks_the_analyst_assessment(good):
    analyst = good[-1]
    bad = Row({**analyst.data, "output": json.dumps({"risk_level": "extreme"})}, "a.jsonl", 2)
    assert checks.check_schema([bad], POLICY).offending_row_count == 1


def test_labels(good):
    assert checks.check_labels(good, TAXONOMY, POLICY).passed
    bad = Row({**good[0].data, "output": "pii.shoe_size"}, "mapper-train.jsonl", 3)
    result = checks.check_labels([*good, bad], TAXONOMY, POLICY)
    assert not result.passed and result.counts["unknown_labels"] == 1


def test_label_distribution(good):
    mapper = [r for r in good if r.task == "mapper"]
    assert checks.check_label_distribution(mapper, TAXONOMY, POLICY).passed
    missing = [r for r in mapper if r.label != "pii.age"]
    result = checks.check_label_distribution(missing, TAXONOMY, POLICY)
    assert not result.passed and "pii.age" in result.message
    heavy = mapper + [r for r in mapper if r.label == "pii.email_address"] * 10
    result = checks.check_label_distribution(heavy, TAXONOMY, POLICY)
    assert not result.passed and "imbalance" in result.message


def test_sequence_length_and_supervised_tokens(good):
    lengths = [100] * len(good)
    prompts = [95] * len(good)
    assert checks.check_sequence_length(good, lengths, POLICY).passed
    assert checks.check_supervised_tokens(good, prompts, lengths, POLICY).passed
    lengths[3] = POLICY.max_seq_length + 1
    assert checks.check_sequence_length(good, lengths, POLICY).offending_row_ids == [good[3].ref]
    prompts[4] = lengths[4]  # a prompt that leaves no completion token
    result = checks.check_supervised_tokens(good, prompts, lengths, POLICY)
    assert result.offending_row_ids == [good[4].ref]


def test_duplicates(good):
    assert checks.check_duplicates(good, POLICY).passed
    result = checks.check_duplicates(good + good[:20], POLICY)
    assert not result.passed and result.counts["exact"] == 20


def test_near_duplicates_found_and_distinct_rows_left_alone():
    base = "the quick brown fox jumps over the lazy dog near the river bank " * 4
    texts = [base, base + "today", "an entirely different sentence about compliance controls"]
    assert near_duplicates(texts, 0.9) == {1: 0}


def test_leakage(good):
    golden = [checks.row_text(good[0]).rsplit(" ", 1)[0]]
    result = checks.check_leakage(good, golden, POLICY)
    assert not result.passed and result.offending_row_ids == [good[0].ref]
    assert checks.check_leakage(good, ["nothing like any row"], POLICY).passed


def test_pii_scans_every_text_of_a_row(good):
    def scan(texts):
        return ["@" in t for t in texts]

    assert checks.check_pii(good, scan, POLICY).passed
    planted = Row({**good[0].data, "output": "pii.email_address jane@example.com"}, "m.jsonl", 9)
    result = checks.check_pii([*good, planted], scan, POLICY)
    assert result.offending_row_ids == [planted.ref]
    finding = NormalizedFinding("acme", "flagged", attributes={"reason": "mail bob@example.org"})
    reason = Row(mapper_row(Candidate.of(finding, ("pii.email_address",), VENDOR), "train"), "m", 1)
    assert "mail bob@example.org" in checks.free_text(reason)
    assert "mail bob@example.org" in checks.row_texts(reason)


def test_pii_fails_a_row_whose_prompt_carries_an_email_and_an_ssn(good):
    """The prompt is scanned too, not only the output and the finding's prose fields."""

    def scan(texts):
        return ["@" in t or "078-05-1120" in t for t in texts]

    data = json.loads(json.dumps(good[0].data))
    user = next(m for m in data["input"] if m["role"] == "user")
    user["content"] += " Contact jane.doe@example.com, SSN 078-05-1120."
    leaked = Row(data, "mapper-train.jsonl", 7)
    assert any("jane.doe@example.com" in t for t in checks.row_texts(leaked))
    result = checks.check_pii([*good, leaked], scan, POLICY)
    assert not result.passed and result.offending_row_ids == [leaked.ref]
    assert "prompt" in result.message
    system = json.loads(json.dumps(good[1].data))
    system["input"][0]["content"] += " Escalate to ops@example.com."
    assert checks.check_pii([Row(system, "m.jsonl", 2)], scan, POLICY).offending_row_count == 1


def test_manifest():
    manifest = {"files": {"a.jsonl": {"sha256": "x" * 64, "rows": 3}}}
    assert checks.check_manifest(
        manifest, {"a.jsonl": "x" * 64}, {"a.jsonl": 3}, "m", "", POLICY
    ).passed
    tampered = checks.check_manifest(
        manifest, {"a.jsonl": "y" * 64}, {"a.jsonl": 3}, "m", "", POLICY
    )
    assert not tampered.passed and tampered.offending_row_ids == ["a.jsonl"]
    pinned = checks.check_manifest(
        manifest, {"a.jsonl": "x" * 64}, {"a.jsonl": 3}, "m", "n", POLICY
    )
    assert not pinned.passed


def test_policy_precedence_and_refusal():
    config = {"training": {"max_seq_length": 256}, "validation": {"leakage_ngram": 8}}
    policy = effective_policy(config, {"min_examples_per_label": 5})
    assert (policy.max_seq_length, policy.leakage_ngram_size, policy.min_examples_per_label) == (
        256,
        8,
        5,
    )
    with pytest.raises(InvalidArgument, match="near_duplicate_threshold"):
        effective_policy(config, {"near_duplicate_threshold": 1.5})


def _dataset(tmp_path, body: bytes):
    (tmp_path / "mapper-train.jsonl").write_bytes(body)
    manifest = {"files": {"mapper-train.jsonl": {"sha256": "0" * 64, "rows": 1}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return str(tmp_path)


def test_loader_names_file_and_line_of_a_truncated_row(tmp_path):
    uri = _dataset(tmp_path, b'{"id": "m-1"}\n{"id": "m-2", "inp\n')
    with pytest.raises(InvalidArgument, match=r"mapper-train\.jsonl:2"):
        load_dataset(uri, max_row_bytes=1 << 20)


def test_loader_refuses_a_huge_row_without_reading_it_whole(tmp_path):
    uri = _dataset(tmp_path, b'{"id": "' + b"x" * (3 << 20) + b'"}\n')
    with pytest.raises(PayloadTooLarge, match=r"mapper-train\.jsonl:1"):
        load_dataset(uri, max_row_bytes=1 << 20)


def test_loader_missing_dataset(tmp_path):
    with pytest.raises(NotFound):
        load_dataset(str(tmp_path / "nope"), max_row_bytes=1 << 20)


def test_fast_schema_agrees_with_jsonschema(good):
    import copy

    from llama_mapper.domain.schemas import validator
    from llama_mapper.validation.fastschema import FastValidator

    slow = validator("mapper-example")
    fast = FastValidator(slow)
    mutations = [
        lambda r: r.update(output=5),
        lambda r: r.pop("id"),
        lambda r: r.update(extra=1),
        lambda r: r["input"].append({"role": "user", "content": "x"}),
        lambda r: r["input"][0].update(role="bot"),
        lambda r: r["input"][1].update(content=""),
        lambda r: r.update(split="nope"),
        lambda r: r.update(labels=[]),
        lambda r: r.update(output="Bad.Label"),
    ]
    for row in (r.data for r in good if r.task == "mapper"):
        assert fast.is_valid(row) and slow.is_valid(row)
        for mutate in mutations:
            bad = copy.deepcopy(row)
            mutate(bad)
            assert fast.is_valid(bad) == slow.is_valid(bad) is False
