"""Dataset builder pieces that need no detector run: vendor shapes, variants, splits, rubric, golden."""

from __future__ import annotations

import json

import pytest

from llama_mapper.datasets import golden as golden_build
from llama_mapper.datasets.analyst import analyst_finding
from llama_mapper.datasets.builder import HELDOUT_DETECTOR, HELDOUT_PAIRS, split_of
from llama_mapper.datasets.generators import vendors
from llama_mapper.datasets.generators.variants import VariantGenerator
from llama_mapper.domain import golden, rubric
from llama_mapper.domain.findings import NormalizedFinding
from llama_mapper.domain.frameworks import default_frameworks
from llama_mapper.domain.readers.base import read
from llama_mapper.domain.rows import VENDOR, Candidate, mapper_row, user_text
from llama_mapper.domain.rules import RulesMapper
from llama_mapper.domain.taxonomy import default_taxonomy
from llama_mapper.validation.policy import Policy
from llama_mapper.validation.similarity import ngram_overlap, reference_ngrams

TAXONOMY = default_taxonomy()


@pytest.fixture(scope="module")
def rules() -> RulesMapper:
    return RulesMapper()


@pytest.mark.parametrize("detector", sorted(vendors.SHAPES))
def test_every_synthesized_vendor_output_reads_and_maps(detector, rules):
    """The shapes follow the readers: nothing synthesized is refused, every raw label reaches
    the rules, and every table entry is exercised."""
    raws = sorted(rules.tables[detector].entries)
    seen = set()
    for output in vendors.vendor_outputs(detector, raws, 2, seed=0):
        for finding in read(detector, output).findings:
            seen.add(finding.raw_label)
    assert {r.casefold() for r in raws} <= {s.casefold() for s in seen}


def test_variants_are_spellings_no_table_holds(rules):
    gen = VariantGenerator(TAXONOMY, rules, seed=0)
    keys = {k.casefold() for t in rules.tables.values() for k in t.entries}
    variants = list(gen.label_variants("pii.email_address", 20))
    assert len(variants) >= 10
    assert all(v.finding.raw_label.casefold() not in keys for v in variants)
    assert {v.label for v in variants} == {"pii.email_address"}


def test_gibberish_resolves_to_nothing(rules):
    gen = VariantGenerator(TAXONOMY, rules, seed=0)
    for candidate in gen.gibberish(50):
        assert candidate.label == "other.unknown"
        assert TAXONOMY.resolve_alias(candidate.finding.raw_label) is None


def test_splits_hold_out_a_detector_and_pairs():
    def candidate(detector: str, label: str) -> Candidate:
        return Candidate.of(NormalizedFinding(detector, "X", score=0.9), (label,), VENDOR)

    assert split_of(candidate(HELDOUT_DETECTOR, "toxicity.general")) == "heldout_detector"
    detector, label = sorted(HELDOUT_PAIRS)[0]
    assert split_of(candidate(detector, label)) == "heldout_pair"
    assert split_of(candidate("presidio", "pii.email_address")) in ("train", "eval")


def test_rubric_escalates_governed_data_and_lowers_unsure_findings():
    frameworks = default_frameworks()

    def assess(framework, finding):
        return rubric.assess(rubric.query(framework, finding), frameworks)

    card = analyst_finding("financial.credit_card", TAXONOMY, "presidio", "CREDIT_CARD", 0.95)
    assert assess("PCI_DSS", card)["risk_level"] == "critical"
    assert assess("SOC2", card)["risk_level"] == "high"
    unsure = analyst_finding("financial.credit_card", TAXONOMY, "presidio", "CREDIT_CARD", 0.4)
    assert assess("SOC2", unsure)["risk_level"] == "medium"
    insult = analyst_finding("toxicity.insult", TAXONOMY, "detoxify", "insult", 0.9)
    out = assess("HIPAA", insult)
    assert out["controls"] == [] and "No HIPAA control applies" in out["remediation"][-1]


def test_golden_set_is_frozen_large_and_labelled():
    rows, digest = golden.load_golden()
    meta = json.loads(golden.golden_paths()[1].read_text())
    assert digest == meta["sha256"] and len(rows) == meta["rows"] >= golden_build.MIN_CASES
    assert {r["output"] for r in rows} == set(TAXONOMY.names)
    assert any(r["heldout"] for r in rows)


def test_golden_overlap_is_measured_like_the_leakage_check():
    rows, _ = golden.load_golden()
    policy = Policy()
    reference = reference_ngrams((user_text(r) for r in rows), policy.leakage_ngram_size)
    assert ngram_overlap(user_text(rows[0]), reference, policy.leakage_ngram_size) == 1.0
    fresh = mapper_row(
        Candidate.of(
            NormalizedFinding("presidio", "NEVER_SEEN_LABEL_XYZ"), ("other.unknown",), VENDOR
        ),
        "train",
    )
    assert ngram_overlap(user_text(fresh), reference, policy.leakage_ngram_size) < 0.8


def test_calibration_cases_are_model_bound_and_disjoint(rules):
    from llama_mapper.datasets.builder import SIZES, calibration_candidates, model_bound

    taken = {c.prompt_key() for c in VariantGenerator(TAXONOMY, rules, seed=0).gibberish(20)}
    seen = set(taken)
    cases = calibration_candidates(
        0, SIZES["default"], rules, seen=seen, reference=set(), leakage_n=8, max_overlap=0.5
    )
    assert len(cases) >= 1000  # the floor for fitting a calibrator
    assert all(model_bound(c, rules) for c in cases)
    assert not taken & {c.prompt_key() for c in cases}
    assert all(c.detector != HELDOUT_DETECTOR for c in cases)
    assert not {(c.detector, c.label) for c in cases} & HELDOUT_PAIRS


def test_the_training_mix_is_mostly_what_the_model_is_asked(rules):
    import random
    from collections import Counter

    from llama_mapper.datasets.builder import (
        MIN_ROWS_PER_LABEL,
        RULED_SHARE,
        SIZES,
        _training_mix,
        model_bound,
    )

    gen = VariantGenerator(TAXONOMY, rules, seed=0)
    pool = [c for label in TAXONOMY.names for c in gen.label_variants(label, 30)]
    pool += [c for label in TAXONOMY.names for c in gen.free_text(label, 30)]
    mix = _training_mix(pool, SIZES["default"], rules, random.Random(0))
    ruled = [c for c in mix if not model_bound(c, rules)]
    assert len(ruled) / len(mix) <= RULED_SHARE + 0.05
    assert len(mix) > 1000 and all(model_bound(c, rules) for c in mix if c.source == "free_text")
    # Every label is still taught, whatever share the rules take.
    per_label = Counter(c.label for c in mix)
    assert min(per_label[label] for label in TAXONOMY.names) >= min(MIN_ROWS_PER_LABEL, 20)


def test_heldout_shapes_are_native_outputs_no_reader_knows(rules):
    from llama_mapper.datasets.builder import SIZES, heldout_shape_rows
    from llama_mapper.datasets.generators.shapes import HELDOUT_SHAPE_DETECTORS
    from llama_mapper.datasets.generators.variants import UNKNOWN_DETECTORS
    from llama_mapper.domain.readers.generic import read_generic
    from llama_mapper.domain.schemas import validate

    rows = heldout_shape_rows(0, SIZES["default"], rules)
    assert len(rows) >= 150
    assert not set(HELDOUT_SHAPE_DETECTORS) & (set(rules.tables) | set(UNKNOWN_DETECTORS))
    for row in rows:
        validate("mapper-example", row)
        assert row["split"] == "heldout_shape" and row["detector"] not in rules.tables
        (finding,) = read_generic(row["detector"], row["native"])
        # The prompt is what serving builds from what the reader found in the native output.
        assert (
            json.loads(row["input"][1]["content"].removeprefix("Detector output: "))["finding"][
                "label"
            ]
            == finding.raw_label
        )
        assert json.dumps(row["native"]) not in row["input"][1]["content"]
