"""The rules read a known vendor label or alias misspelled by one letter as it, and only then."""

import random

import pytest

from llama_mapper.domain.findings import NormalizedFinding
from llama_mapper.domain.rules import SPELLING_MIN_LENGTH, RulesMapper
from llama_mapper.domain.tables import SPELLING_CONFIDENCE, parse_table
from llama_mapper.domain.taxonomy import UNKNOWN, default_taxonomy
from llama_mapper.evaluation.robustness import perturb_typo

TAXONOMY = default_taxonomy()
TABLE = {
    "detector": "acme",
    "labels": {
        "CUSTOMER_EMAIL": "pii.email_address",
        # Two keys one letter apart naming different labels: a spelling between them is neither.
        "ACCOUNT_KEY_A": "credentials.api_key",
        "ACCOUNT_KEY_B": "pii.email_address",
        "LEGACY_BUCKET": UNKNOWN,
        "PHONE_DIGITS": {"labels": "pii.phone_number", "min_score": 0.8},
        "S1": "violence.general",
    },
}


@pytest.fixture(scope="module")
def rules():
    return RulesMapper(TAXONOMY, {"acme": parse_table(TABLE, TAXONOMY)})


def _match(rules, detector, raw, score=None):
    return rules.match(NormalizedFinding(detector, raw, score=score))


@pytest.mark.parametrize(
    "spelling",
    ["CUSTOMER_EMIAL", "CUSTOMR_EMAIL", "CUSTOMERR_EMAIL", "CUSTOMEREMAIL", "customer-emal"],
)
def test_one_edit_from_the_detectors_own_label_reads_as_it(rules, spelling):
    match = _match(rules, "acme", spelling)
    assert match.labels == ("pii.email_address",) and match.matched
    assert match.confidence == SPELLING_CONFIDENCE and not match.needs_review


def test_a_spelling_between_two_labels_short_codes_and_unknown_entries_stay_unknown(rules):
    assert _match(rules, "acme", "ACCOUNT_KEY_C").labels == (UNKNOWN,)  # A or B: not a guess
    assert _match(rules, "acme", "S2").labels == (UNKNOWN,)  # shorter than SPELLING_MIN_LENGTH
    assert len("S1") < SPELLING_MIN_LENGTH
    # The table says "we cannot say" for this one: its neighbours are not read into it...
    assert _match(rules, "acme", "LEGACY_BUCKET").labels == (UNKNOWN,)
    # ...and a spelling of it is not read as anything either.
    assert _match(rules, "acme", "LEGACY_BUCKETS").labels == (UNKNOWN,)
    assert _match(rules, "acme", "CUSTOMER_EMAIL_ADDRESS_OF_RECORD").labels == (UNKNOWN,)


def test_the_own_entrys_threshold_applies_to_its_spelling(rules):
    assert _match(rules, "acme", "PHONE_DIGTS", score=0.9).labels == ("pii.phone_number",)
    assert _match(rules, "acme", "PHONE_DIGTS", score=0.5) is None  # below the entry's 0.8


def test_a_detector_nobody_wrote_a_table_for_is_read_through_the_shared_spellings():
    rules = RulesMapper()
    assert _match(rules, "nobody", "EMIAL_ADDRESS").labels == ("pii.email_address",)
    assert _match(rules, "nobody", "pasport_number").labels == ("pii.passport_number",)
    assert _match(rules, "nobody", "zzzzzzzzzz").labels == (UNKNOWN,)


def test_every_shipped_label_misspelled_reads_as_its_entry_or_not_at_all():
    """The class: a typo of any vendor label in any shipped table is its own entry's labels, or
    unknown, or (when the typo is itself another vendor label) that label; never a third."""
    rules = RulesMapper()
    rng = random.Random(7)
    read = wrong = 0
    for detector, table in rules.tables.items():
        keys = set(table.entries)
        for raw, entry in table.entries.items():
            if UNKNOWN in entry.labels:
                continue
            for _ in range(3):
                typo = perturb_typo(raw, rng)
                match = rules.match(NormalizedFinding(detector, typo))
                if match is None or match.labels == (UNKNOWN,):
                    continue
                if match.labels == entry.labels:
                    read += 1
                elif typo not in keys:
                    wrong += 1
    assert wrong == 0
    assert read > 2500  # most of them: the step is not a no-op
