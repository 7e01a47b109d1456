"""Label decoding ends at the first decisive prefix (pure: vLLM's own stop-string check, no engine)."""

from __future__ import annotations

import math
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from llama_mapper.domain.taxonomy import default_taxonomy
from llama_mapper.inference.vllm_engine.decoding import (
    decisive_prefixes,
    mapper_sampling_params,
    prediction_from_completion,
)

TAXONOMY = default_taxonomy()
LABELS = tuple(TAXONOMY.names)


def writable_texts(labels: tuple[str, ...]) -> set[str]:
    """Every text the label grammar lets the model write: the prefixes of the labels."""
    return {label[:end] for label in labels for end in range(1, len(label) + 1)}


def first_stop(text: str, stops: list[str]) -> tuple[str, int] | None:
    """vLLM's check as the detokenizer runs it, one character at a time (the earliest end wins)."""
    from vllm.v1.engine.detokenizer import check_stop_strings

    for end in range(1, len(text) + 1):
        hit = check_stop_strings(text[:end], 1, stops, include_in_output=True)
        if hit is not None:
            return hit[0], end
    return None


def assert_decisive(labels: tuple[str, ...]) -> None:
    stops = decisive_prefixes(labels)
    for text in writable_texts(labels):
        hit = first_stop(text, list(stops))
        consistent = {label for label in labels if label.startswith(text)}
        if hit is None:
            continue
        stop, end = hit
        # A stop fires only where the text so far is the stop string itself, at the start ...
        assert text[:end] == stop, (text, stop)
        # ... and every label that text can still become is the one the stop names.
        assert consistent == {stops[stop]}, (text, stop, consistent)
    for stop, label in stops.items():
        assert label.startswith(stop)


def test_every_label_of_the_taxonomy_has_a_decisive_prefix_shorter_than_itself():
    stops = decisive_prefixes(LABELS)
    assert sorted(stops.values()) == sorted(LABELS)
    assert all(len(stop) < len(label) for stop, label in stops.items())
    assert_decisive(LABELS)


def test_a_stop_fires_only_where_one_label_is_left_on_shortlists_of_the_taxonomy():
    assert_decisive(("pii.email_address", "pii.phone_number", "other.no_finding", "other.unknown"))
    assert_decisive((*LABELS[:5], "other.no_finding", "other.unknown"))


def test_a_label_that_begins_another_is_decided_by_its_end_not_a_stop():
    stops = decisive_prefixes(("a", "ab", "abc", "b.x", "x.b"))
    # "a" and "ab" begin longer labels: only the end token tells them apart.
    assert "a" not in stops.values() and "ab" not in stops.values()
    # "b" occurs inside "ab" and "x.b": a stop there would fire while writing those.
    assert stops == {"abc": "abc", "b.": "b.x", "x.": "x.b"}


label_text = st.text(alphabet="ab._x", min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.lists(label_text, min_size=1, max_size=8, unique=True))
def test_decisive_prefixes_hold_for_any_label_set(labels):
    assert_decisive(tuple(labels))


def completion(text: str, stop_reason: str | None, logprobs: list[float]) -> SimpleNamespace:
    token_ids = list(range(len(logprobs)))
    entries = [{i: SimpleNamespace(logprob=lp)} for i, lp in zip(token_ids, logprobs, strict=True)]
    return SimpleNamespace(
        text=text,
        finish_reason="stop",
        stop_reason=stop_reason,
        token_ids=token_ids,
        logprobs=entries,
    )


def test_a_completion_cut_at_a_decisive_prefix_answers_its_label_with_the_path_probability():
    stop = next(
        s for s, label in decisive_prefixes(LABELS).items() if label == "financial.credit_card"
    )
    out = prediction_from_completion(completion(stop, stop, [-0.1, -0.2]), TAXONOMY, 0.01, LABELS)
    assert out.valid and out.label == "financial.credit_card"
    assert math.isclose(out.confidence, math.exp(-0.3))
    # A full answer (the end token) is read as before.
    whole = prediction_from_completion(
        completion("financial.credit_card", None, [-0.1]), TAXONOMY, 0, LABELS
    )
    assert whole.valid and whole.label == "financial.credit_card"


def test_a_cut_text_that_is_not_its_stop_string_or_not_of_the_set_is_refused():
    stops = decisive_prefixes(LABELS)
    stop = next(iter(stops))
    # The stop string of another set, or text that is not the stop string: other.unknown.
    assert not prediction_from_completion(completion(stop, stop, [-0.1]), TAXONOMY, 0, ()).valid
    bad = prediction_from_completion(completion(stop + "zz", stop, [-0.1]), TAXONOMY, 0, LABELS)
    assert not bad.valid and bad.label == "other.unknown"


def test_sampling_params_stop_at_decisive_prefixes_unless_told_not_to():
    on = mapper_sampling_params(LABELS[:4], 16)
    assert set(on.stop) == set(decisive_prefixes(LABELS[:4])) and on.include_stop_str_in_output
    off = mapper_sampling_params(LABELS[:4], 16, decisive_stop=False)
    assert not off.stop
