"""Crosswalk tables: every label covered, every target id one the scheme defines, the result block."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from llama_mapper.cli.main import main
from llama_mapper.domain.crosswalks import add_crosswalks, default_crosswalks, parse_crosswalk
from llama_mapper.domain.errors import InvalidArgument, NotFound
from llama_mapper.domain.rules import RulesMapper
from llama_mapper.domain.schemas import validator
from llama_mapper.domain.tables import default_tables
from llama_mapper.domain.taxonomy import default_taxonomy

CROSSWALKS = (
    Path(__file__).resolve().parents[2]
    / "services"
    / "llama_mapper"
    / "domain"
    / "catalog"
    / "crosswalks"
)
SCHEMES = ("ailuminate", "llama-guard", "owasp-llm-top10", "openguardrails")
TAXONOMY = default_taxonomy()


def doc_of(scheme: str) -> dict:
    return yaml.safe_load((CROSSWALKS / f"{scheme}.yaml").read_text(encoding="utf-8"))


def test_the_four_schemes_ship() -> None:
    assert set(default_crosswalks().schemes) == set(SCHEMES)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_label_is_mapped_or_explicitly_without_counterpart(scheme: str) -> None:
    doc = doc_of(scheme)
    mapped = set(doc["mappings"])
    excused = set(doc["no_counterpart"])
    assert not mapped & excused
    assert mapped | excused == set(TAXONOMY.labels)
    assert all(reason.strip() for reason in doc["no_counterpart"].values())


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_target_id_is_one_the_scheme_defines(scheme: str) -> None:
    crosswalk = default_crosswalks().scheme(scheme)
    for mapping in crosswalk.mappings.values():
        assert set(mapping.ids) <= set(crosswalk.ids), mapping
        assert len(set(mapping.ids)) == len(mapping.ids), mapping
    assert crosswalk.version and crosswalk.scheme_version and crosswalk.source


def test_scheme_id_sets_are_the_published_ones() -> None:
    crosswalks = default_crosswalks()
    assert set(crosswalks.scheme("llama-guard").ids) == {f"S{n}" for n in range(1, 15)}
    assert set(crosswalks.scheme("owasp-llm-top10").ids) == {f"LLM{n:02d}" for n in range(1, 11)}
    assert set(crosswalks.scheme("ailuminate").ids) == {
        "vcr", "src", "cse", "ssh", "iwp", "ipv", "dfm", "ncr", "hte", "prv",
        "spc_ele", "spc_fin", "spc_hlt", "spc_lgl", "sxc_prn",
    }  # fmt: skip


def test_openguardrails_table_keys_are_ids_of_the_scheme() -> None:
    # The reader rolls categories up to the scheme's ids, so the table can only see those.
    ids = set(default_crosswalks().scheme("openguardrails").ids)
    assert set(default_tables()["openguardrails"].entries) <= ids


def test_partial_mappings_say_why() -> None:
    ailuminate = default_crosswalks().scheme("ailuminate")
    advice = ailuminate.mappings["policy.specialized_advice"]
    assert advice.ids == ("spc_fin", "spc_hlt", "spc_lgl") and advice.partial
    assert not ailuminate.mappings["hate.religion"].partial
    assert ailuminate.mappings["security.jailbreak"].ids == ()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["mappings"].update({"hate.religion": ["nope"]}), "is not an id"),
        (lambda d: d["mappings"].pop("hate.religion"), "neither mapped nor excused"),
        (lambda d: d["no_counterpart"].update({"hate.other": "x"}), "mapped and in no_counterpart"),
        (lambda d: d["no_counterpart"].update({"policy.other": ""}), "no reason"),
        (lambda d: d["mappings"].update({"hate.religion": []}), "maps to no id"),
        (lambda d: d["mappings"].update({"pii.invented": ["prv"]}), "pii.invented"),
        (lambda d: d.pop("version"), "`version` is required"),
    ],
)
def test_inconsistent_crosswalk_is_refused(change, message: str) -> None:
    doc = copy.deepcopy(doc_of("ailuminate"))
    change(doc)
    with pytest.raises(InvalidArgument, match=message):
        parse_crosswalk(doc, TAXONOMY)


def test_result_gets_a_crosswalks_block_that_validates() -> None:
    result = RulesMapper().map("llama-guard", "unsafe\nS1,S10", request_id="cw")
    before = copy.deepcopy(result)
    out = add_crosswalks(result, ["ailuminate", "llama-guard", "owasp-llm-top10"])
    assert result == before  # a copy, the input is untouched
    validator("mapper-output").validate(out)
    assert out["crosswalks"]["ailuminate"] == [
        {"label": "hate.other", "ids": ["hte"]},
        {"label": "violence.general", "ids": ["vcr"]},
    ]
    assert out["crosswalks"]["llama-guard"] == [
        {"label": "hate.other", "ids": ["S10"]},
        {"label": "violence.general", "ids": ["S1"]},
    ]
    # No counterpart is an answer: the label is listed with no ids.
    assert out["crosswalks"]["owasp-llm-top10"] == [
        {"label": "hate.other", "ids": []},
        {"label": "violence.general", "ids": []},
    ]
    assert out["provenance"]["crosswalk_versions"] == {
        "ailuminate": "ailuminate@1.0.0",
        "llama-guard": "llama-guard@1.0.0",
        "owasp-llm-top10": "owasp-llm-top10@1.0.0",
    }


def test_unknown_scheme_is_not_found() -> None:
    result = RulesMapper().map("llama-guard", "safe", request_id="cw")
    with pytest.raises(NotFound, match="known schemes"):
        add_crosswalks(result, ["nope"])


def test_result_without_crosswalks_still_validates() -> None:
    result = RulesMapper().map("llama-guard", "safe", request_id="cw")
    assert "crosswalks" not in result
    validator("mapper-output").validate(result)


def test_cli_prints_a_crosswalk(capsys) -> None:
    assert main(["taxonomy", "crosswalk", "owasp-llm-top10"]) == 0
    out = capsys.readouterr().out
    assert "security.prompt_injection" in out and "LLM01" in out
    assert main(["taxonomy", "crosswalk", "ailuminate", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["scheme_version"] == "1.0" and len(doc["mappings"]) == len(TAXONOMY.labels)
    assert {"label": "sexual.minors", "ids": ["cse"], "partial": False, "note": ""} in doc[
        "mappings"
    ]


def test_cli_unknown_crosswalk(capsys) -> None:
    assert main(["taxonomy", "crosswalk", "nope"]) == 2
    assert "NOT_FOUND" in capsys.readouterr().err
