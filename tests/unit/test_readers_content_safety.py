"""Content-safety readers (Azure, OpenAI moderation, Llama Guard, Detoxify) and their tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from llama_mapper.domain.readers.azure_content_safety import read_azure_content_safety
from llama_mapper.domain.readers.base import DetectorOutputError, known_detectors, read
from llama_mapper.domain.readers.detoxify import read_detoxify
from llama_mapper.domain.readers.llama_guard import read_llama_guard
from llama_mapper.domain.readers.openai_moderation import read_openai_moderation
from llama_mapper.domain.rules import RulesMapper
from llama_mapper.domain.tables import MappingTable, parse_table
from llama_mapper.domain.taxonomy import default_taxonomy

MAPPINGS = (
    Path(__file__).resolve().parents[2]
    / "services"
    / "llama_mapper"
    / "domain"
    / "catalog"
    / "mappings"
)
DETECTORS = ("azure-content-safety", "openai-moderation", "llama-guard", "detoxify")


def load_table(detector: str, **overrides: Any) -> MappingTable:
    doc = yaml.safe_load((MAPPINGS / f"{detector}.yaml").read_text(encoding="utf-8"))
    doc.update(overrides)
    return parse_table(doc, default_taxonomy())


@pytest.fixture(scope="module")
def mapper() -> RulesMapper:
    # Only this file's tables: the other detectors' tables are someone else's to get right.
    return RulesMapper(tables={detector: load_table(detector) for detector in DETECTORS})


def labels_of(result: dict[str, Any]) -> list[str]:
    return result["taxonomy"]


def finding_for(result: dict[str, Any], label: str) -> dict[str, Any]:
    (match,) = [f for f in result["findings"] if f["label"] == label]
    return match


# --- Azure AI Content Safety ----------------------------------------------------------------------

# The text:analyze sample response of Azure's REST reference (FourSeverityLevels).
AZURE_ANALYZE = {
    "blocklistsMatch": [],
    "categoriesAnalysis": [
        {"category": "Hate", "severity": 2},
        {"category": "SelfHarm", "severity": 0},
        {"category": "Sexual", "severity": 0},
        {"category": "Violence", "severity": 0},
    ],
}


def test_azure_documented_analyze_response_maps_hate(mapper: RulesMapper) -> None:
    report = read_azure_content_safety(AZURE_ANALYZE)
    assert [(f.raw_label, f.severity) for f in report.findings] == [("Hate", 2)]
    assert report.explicit_no_finding is False
    result = mapper.map_report(report, request_id="r1")
    assert labels_of(result) == ["hate.other"]
    assert finding_for(result, "hate.other")["source"] == {
        "detector": "azure-content-safety",
        "raw_label": "Hate",
        "severity": 2,
    }


def test_azure_eight_severity_levels_multiple_findings(mapper: RulesMapper) -> None:
    output = json.dumps(
        {
            "categoriesAnalysis": [
                {"category": "Hate", "severity": 3},
                {"category": "SelfHarm", "severity": 1},
                {"category": "Sexual", "severity": 0},
                {"category": "Violence", "severity": 7},
            ]
        }
    )
    result = mapper.map("azure-content-safety", output, request_id="r2")
    assert labels_of(result) == ["hate.other", "self_harm.general", "violence.general"]
    assert finding_for(result, "violence.general")["source"]["severity"] == 7
    assert result["needs_review"] is False


def test_azure_all_zero_is_explicit_no_finding(mapper: RulesMapper) -> None:
    clean = {
        **AZURE_ANALYZE,
        "categoriesAnalysis": [{**c, "severity": 0} for c in AZURE_ANALYZE["categoriesAnalysis"]],
    }
    report = read_azure_content_safety(clean)
    assert report.findings == ()
    assert report.explicit_no_finding is True
    assert labels_of(mapper.map_report(report, request_id="r3")) == ["other.no_finding"]


def test_azure_table_min_severity_drops_low_severities() -> None:
    strict = RulesMapper(
        tables={"azure-content-safety": load_table("azure-content-safety", min_severity=4)}
    )
    output = {
        "categoriesAnalysis": [
            {"category": "Hate", "severity": 2},
            {"category": "Violence", "severity": 4},
        ]
    }
    assert labels_of(strict.map("azure-content-safety", output, request_id="r")) == [
        "violence.general"
    ]
    low_only = {"categoriesAnalysis": [{"category": "Sexual", "severity": 2}]}
    assert labels_of(strict.map("azure-content-safety", low_only, request_id="r")) == [
        "other.no_finding"
    ]


def test_azure_blocklist_match_never_keeps_the_matched_text(mapper: RulesMapper) -> None:
    secret_term = "zq-forbidden-term-7731"
    output = {
        "blocklistsMatch": [
            {
                "blocklistName": "brand-terms",
                "blocklistItemId": "0b6e2c2b-0000-4000-8000-000000000001",
                "blocklistItemText": secret_term,
            }
        ],
        "categoriesAnalysis": [{"category": "Hate", "severity": 0}],
    }
    report = read_azure_content_safety(output)
    (finding,) = report.findings
    assert finding.raw_label == "blocklistsMatch"
    assert finding.attributes == {
        "blocklist_name": "brand-terms",
        "blocklist_item_id": "0b6e2c2b-0000-4000-8000-000000000001",
    }
    result = mapper.map_report(report, request_id="r4")
    assert labels_of(result) == ["policy.other"]
    assert secret_term not in repr(report)
    assert secret_term not in json.dumps(result)


def test_azure_prompt_shields_user_and_document_attacks(mapper: RulesMapper) -> None:
    output = {
        "userPromptAnalysis": {"attackDetected": True},
        "documentsAnalysis": [{"attackDetected": False}, {"attackDetected": True}],
    }
    report = read_azure_content_safety(output)
    assert [(f.raw_label, f.attributes) for f in report.findings] == [
        ("userPromptAnalysis", {}),
        ("documentsAnalysis", {"index": 1}),
    ]
    result = mapper.map_report(report, request_id="r5")
    assert labels_of(result) == ["security.jailbreak", "security.prompt_injection"]


def test_azure_prompt_shields_clean(mapper: RulesMapper) -> None:
    output = {"userPromptAnalysis": {"attackDetected": False}, "documentsAnalysis": []}
    report = read_azure_content_safety(output)
    assert report.explicit_no_finding is True
    assert labels_of(mapper.map_report(report, request_id="r")) == ["other.no_finding"]


def test_azure_protected_material_text_and_code(mapper: RulesMapper) -> None:
    text = read_azure_content_safety({"protectedMaterialAnalysis": {"detected": True}})
    assert labels_of(mapper.map_report(text, request_id="r")) == ["policy.intellectual_property"]
    url = "https://github.com/example/repo/blob/main/lib.py"
    code = read_azure_content_safety(
        {
            "protectedMaterialAnalysis": {
                "detected": True,
                "codeCitations": [
                    {"license": "MIT", "sourceUrls": [url]},
                    {"license": "NOASSERTION", "sourceUrls": [url]},
                ],
            }
        }
    )
    (finding,) = code.findings
    assert finding.attributes == {"licenses": ["MIT", "NOASSERTION"]}
    assert url not in repr(code)
    not_detected = read_azure_content_safety({"protectedMaterialAnalysis": {"detected": False}})
    assert not_detected.explicit_no_finding is True


def test_azure_groundedness_keeps_share_not_sentences(mapper: RulesMapper) -> None:
    # The groundedness quickstart's response with reasoning enabled.
    output = {
        "ungroundedDetected": True,
        "ungroundedPercentage": 1,
        "ungroundedDetails": [
            {
                "text": "12/hour.",
                "offset": {"utf8": 0, "utf16": 0, "codePoint": 0},
                "length": {"utf8": 8, "utf16": 8, "codePoint": 8},
                "reason": "None. The premise mentions a pay of 10/hour.",
            }
        ],
    }
    report = read_azure_content_safety(output)
    (finding,) = report.findings
    assert (finding.raw_label, finding.score) == ("ungroundedDetected", 1)
    assert finding.attributes == {"ungrounded_segments": 1}
    result = mapper.map_report(report, request_id="r")
    assert labels_of(result) == ["misinformation.general"]
    assert "12/hour" not in json.dumps(result)
    grounded = read_azure_content_safety({"ungroundedDetected": False, "ungroundedPercentage": 0})
    assert grounded.explicit_no_finding is True


def test_azure_unknown_category_falls_back_to_review(mapper: RulesMapper) -> None:
    result = mapper.map(
        "azure-content-safety",
        {"categoriesAnalysis": [{"category": "Brand Safety", "severity": 4}]},
        request_id="r",
    )
    assert labels_of(result) == ["other.unknown"]
    assert result["needs_review"] is True


def test_azure_category_that_names_a_taxonomy_subcategory_maps(mapper: RulesMapper) -> None:
    """Azure's table has no Profanity, but one taxonomy category has that subcategory."""
    result = mapper.map(
        "azure-content-safety",
        {"categoriesAnalysis": [{"category": "Profanity", "severity": 4}]},
        request_id="r",
    )
    assert labels_of(result) == ["toxicity.profanity"]
    assert result["needs_review"] is False


def test_azure_missing_severity_says_nothing() -> None:
    report = read_azure_content_safety({"categoriesAnalysis": [{"category": "Hate"}]})
    assert report.findings == ()


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ([], "expected a JSON object, got a list"),
        ("{not json", "output is not JSON"),
        ({"result": {}}, "expected at least one of categoriesAnalysis"),
        ({"categoriesAnalysis": {"Hate": 2}}, "categoriesAnalysis must be a list, got an object"),
        ({"categoriesAnalysis": ["Hate"]}, "categoriesAnalysis[0] must be an object"),
        ({"categoriesAnalysis": [{"severity": 2}]}, "categoriesAnalysis[0].category must be"),
        (
            {"categoriesAnalysis": [{"category": "Hate", "severity": "high"}]},
            "severity must be an integer, got a string",
        ),
        (
            {"categoriesAnalysis": [{"category": "Hate", "severity": True}]},
            "severity must be an integer, got a boolean",
        ),
        (
            {"categoriesAnalysis": [{"category": "Hate", "severity": 8}]},
            "severity must be between 0 and 7, got 8",
        ),
        ({"categoriesAnalysis": [{"category": "Hate", "severity": -1}]}, "between 0 and 7, got -1"),
        (
            {"blocklistsMatch": [{"blocklistItemText": "x"}]},
            "blocklistsMatch[0].blocklistName must be",
        ),
        (
            {"userPromptAnalysis": {"attackDetected": "yes"}},
            "userPromptAnalysis.attackDetected must be true or false, got a string",
        ),
        ({"documentsAnalysis": {"attackDetected": True}}, "documentsAnalysis must be a list"),
        (
            {"documentsAnalysis": [{}]},
            "documentsAnalysis[0].attackDetected must be true or false, got null",
        ),
        (
            {"protectedMaterialAnalysis": {"detected": 1}},
            "protectedMaterialAnalysis.detected must be true or false",
        ),
        (
            {"ungroundedDetected": True, "ungroundedPercentage": 35},
            "ungroundedPercentage must be a number between 0 and 1",
        ),
    ],
)
def test_azure_malformed_output_is_rejected(output: Any, message: str) -> None:
    with pytest.raises(DetectorOutputError) as caught:
        read_azure_content_safety(output)
    assert caught.value.message.startswith("azure-content-safety: ")
    assert message in caught.value.message


# --- OpenAI moderation ----------------------------------------------------------------------------

# The example response of OpenAI's moderation reference (omni-moderation-latest).
OPENAI_EXAMPLE = {
    "id": "modr-0d9740456c391e43c445bf0f010940c7",
    "model": "omni-moderation-latest",
    "results": [
        {
            "flagged": True,
            "categories": {
                "harassment": True,
                "harassment/threatening": True,
                "sexual": False,
                "hate": False,
                "hate/threatening": False,
                "illicit": False,
                "illicit/violent": False,
                "self-harm/intent": False,
                "self-harm/instructions": False,
                "self-harm": False,
                "sexual/minors": False,
                "violence": True,
                "violence/graphic": True,
            },
            "category_scores": {
                "harassment": 0.8189693396524255,
                "harassment/threatening": 0.804985420696006,
                "sexual": 1.573112165348997e-6,
                "hate": 0.007562942636942845,
                "hate/threatening": 0.004208854591835476,
                "illicit": 0.030535955153511665,
                "illicit/violent": 0.008925306722380033,
                "self-harm/intent": 0.00023023930975076432,
                "self-harm/instructions": 0.0002293869201073356,
                "self-harm": 0.012598046106750154,
                "sexual/minors": 2.212566909570261e-8,
                "violence": 0.9999992735124786,
                "violence/graphic": 0.843064871157054,
            },
            "category_applied_input_types": {
                "harassment": ["text"],
                "harassment/threatening": ["text"],
                "sexual": ["text", "image"],
                "hate": ["text"],
                "hate/threatening": ["text"],
                "illicit": ["text"],
                "illicit/violent": ["text"],
                "self-harm/intent": ["text", "image"],
                "self-harm/instructions": ["text", "image"],
                "self-harm": ["text", "image"],
                "sexual/minors": ["text"],
                "violence": ["text", "image"],
                "violence/graphic": ["text", "image"],
            },
        }
    ],
}


def openai_result(
    flags: dict[str, bool], scores: dict[str, float], flagged: bool | None = None
) -> dict[str, Any]:
    return {
        "id": "modr-test",
        "model": "omni-moderation-latest",
        "results": [
            {
                "flagged": any(flags.values()) if flagged is None else flagged,
                "categories": flags,
                "category_scores": scores,
            }
        ],
    }


def test_openai_documented_example(mapper: RulesMapper) -> None:
    report = read_openai_moderation(json.dumps(OPENAI_EXAMPLE))
    assert [f.raw_label for f in report.findings] == [
        "harassment",
        "harassment/threatening",
        "violence",
        "violence/graphic",
    ]
    violence = report.findings[2]
    assert violence.attributes == {
        "index": 0,
        "flagged": True,
        "applied_input_types": ["text", "image"],
    }
    result = mapper.map_report(report, request_id="r")
    assert labels_of(result) == [
        "toxicity.harassment",
        "toxicity.threat",
        "violence.general",
        "violence.graphic",
    ]
    assert finding_for(result, "violence.graphic")["source"]["score"] == pytest.approx(0.843065)


def test_openai_flag_or_score_decides(mapper: RulesMapper) -> None:
    # Flagged with a low score stays a finding (OpenAI's per-category thresholds are its own);
    # an unflagged category whose score reaches 0.5 is one too; the rest are not.
    output = openai_result(
        {"sexual/minors": True, "illicit/violent": False, "hate": False},
        {"sexual/minors": 0.12, "illicit/violent": 0.71, "hate": 0.49},
        flagged=True,
    )
    result = mapper.map("openai-moderation", output, request_id="r")
    assert labels_of(result) == ["illicit.other", "sexual.minors", "violence.general"]
    minors = finding_for(result, "sexual.minors")
    assert minors["source"] == {
        "detector": "openai-moderation",
        "raw_label": "sexual/minors",
        "score": 0.12,
    }


def test_openai_many_to_many_rows(mapper: RulesMapper) -> None:
    output = openai_result(
        {"hate/threatening": True, "self-harm/intent": True, "self-harm/instructions": True},
        {"hate/threatening": 0.9, "self-harm/intent": 0.8, "self-harm/instructions": 0.7},
    )
    result = mapper.map("openai-moderation", output, request_id="r")
    assert labels_of(result) == [
        "hate.other",
        "self_harm.instructions",
        "self_harm.intent",
        "violence.general",
    ]


def test_openai_clean_result_is_no_finding(mapper: RulesMapper) -> None:
    flags = dict.fromkeys(OPENAI_EXAMPLE["results"][0]["categories"], False)
    scores = dict.fromkeys(flags, 0.001)
    report = read_openai_moderation(openai_result(flags, scores))
    assert report.findings == ()
    assert report.explicit_no_finding is True
    assert labels_of(mapper.map_report(report, request_id="r")) == ["other.no_finding"]


def test_openai_sdk_spellings_fold_to_wire_names(mapper: RulesMapper) -> None:
    # openai-python's Moderation.model_dump() without by_alias uses attribute names.
    output = openai_result(
        {
            "self_harm_intent": True,
            "sexual_minors": False,
            "harassment_threatening": True,
            "self_harm": False,
        },
        {
            "self_harm_intent": 0.93,
            "sexual_minors": 0.0,
            "harassment_threatening": 0.88,
            "self_harm": 0.2,
        },
    )
    report = read_openai_moderation(output)
    assert [f.raw_label for f in report.findings] == ["self-harm/intent", "harassment/threatening"]
    result = mapper.map_report(report, request_id="r")
    assert labels_of(result) == ["self_harm.intent", "toxicity.harassment", "toxicity.threat"]


def test_openai_null_category_of_older_models_is_skipped() -> None:
    output = openai_result({"illicit": None, "hate": False}, {"illicit": None, "hate": 0.01})  # type: ignore[dict-item]
    report = read_openai_moderation(output)
    assert report.findings == ()


def test_openai_batch_results_carry_the_input_index(mapper: RulesMapper) -> None:
    first = openai_result({"sexual": False}, {"sexual": 0.01})["results"][0]
    second = openai_result({"sexual": True}, {"sexual": 0.97})["results"][0]
    report = read_openai_moderation({"id": "modr-x", "model": "m", "results": [first, second]})
    (finding,) = report.findings
    assert (finding.raw_label, finding.attributes["index"]) == ("sexual", 1)
    assert labels_of(mapper.map_report(report, request_id="r")) == ["sexual.adult"]


def test_openai_flagged_without_category_goes_to_review(mapper: RulesMapper) -> None:
    output = openai_result({"hate": False}, {"hate": 0.3}, flagged=True)
    result = mapper.map("openai-moderation", output, request_id="r")
    assert labels_of(result) == ["other.unknown"]
    assert result["needs_review"] is True


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("[]", "expected a JSON object, got a list"),
        ({"id": "x"}, "`results` must be a list, got null"),
        ({"results": {}}, "`results` must be a list, got an object"),
        ({"results": []}, "`results` is empty"),
        ({"results": ["flagged"]}, "results[0] must be an object, got a string"),
        (
            {"results": [{"categories": {}, "category_scores": {}}]},
            "results[0].flagged must be true or false, got null",
        ),
        (
            {"results": [{"flagged": False, "category_scores": {}}]},
            "results[0].categories must be an object, got null",
        ),
        (
            {"results": [{"flagged": False, "categories": {}, "category_scores": []}]},
            "results[0].category_scores must be an object, got a list",
        ),
        (
            {"results": [{"flagged": True, "categories": {"hate": "yes"}, "category_scores": {}}]},
            "categories['hate'] must be true, false or null, got a string",
        ),
        (
            {"results": [{"flagged": False, "categories": {}, "category_scores": {"hate": 1.5}}]},
            "category_scores['hate'] must be a number between 0 and 1",
        ),
        (
            {"results": [{"flagged": False, "categories": {}, "category_scores": {"hate": "0.2"}}]},
            "category_scores['hate'] must be a number",
        ),
        (
            {
                "results": [
                    {
                        "flagged": False,
                        "categories": {},
                        "category_scores": {},
                        "category_applied_input_types": [],
                    }
                ]
            },
            "category_applied_input_types must be an object",
        ),
    ],
)
def test_openai_malformed_output_is_rejected(output: Any, message: str) -> None:
    with pytest.raises(DetectorOutputError) as caught:
        read_openai_moderation(output)
    assert caught.value.message.startswith("openai-moderation: ")
    assert message in caught.value.message


# --- Llama Guard 3 --------------------------------------------------------------------------------


@pytest.mark.parametrize("verdict", ["safe", "safe\n", "  Safe  ", b"SAFE"])
def test_llama_guard_safe(verdict: str | bytes, mapper: RulesMapper) -> None:
    report = read_llama_guard(verdict)
    assert report.findings == ()
    assert report.explicit_no_finding is True
    assert labels_of(mapper.map_report(report, request_id="r")) == ["other.no_finding"]


@pytest.mark.parametrize(
    "verdict",
    [
        "unsafe\nS1,S10",
        "unsafe\nS1, S10",
        " UNSAFE \n s1,s10 \n",
        "unsafe S1 S10",
        "unsafe\nS1\nS10",
        "unsafe\nS01,S10,S1",
    ],
)
def test_llama_guard_unsafe_spellings(verdict: str, mapper: RulesMapper) -> None:
    report = read_llama_guard(verdict)
    assert [f.raw_label for f in report.findings] == ["S1", "S10"]
    assert report.explicit_no_finding is False
    assert labels_of(mapper.map_report(report, request_id="r")) == [
        "hate.other",
        "violence.general",
    ]


def test_llama_guard_every_hazard_code_is_mapped(mapper: RulesMapper) -> None:
    codes = ",".join(f"S{n}" for n in range(1, 15))
    result = mapper.map("llama-guard", f"unsafe\n{codes}", request_id="r")
    assert labels_of(result) == sorted(
        {
            "violence.general",
            "illicit.other",
            "sexual.adult",
            "sexual.minors",
            "misinformation.defamation",
            "policy.specialized_advice",
            "pii.other",
            "policy.intellectual_property",
            "violence.weapons",
            "hate.other",
            "self_harm.general",
            "misinformation.elections",
            "security.tool_abuse",
        }
    )
    assert result["needs_review"] is False


def test_llama_guard_sex_crimes_map_to_two_labels_with_lower_confidence(
    mapper: RulesMapper,
) -> None:
    result = mapper.map("llama-guard", "unsafe\nS3", request_id="r")
    assert labels_of(result) == ["illicit.other", "sexual.adult"]
    assert {f["confidence"] for f in result["findings"]} == {0.9}


def test_llama_guard_unknown_code_is_kept_and_reviewed(mapper: RulesMapper) -> None:
    report = read_llama_guard("unsafe\nS2,S15")
    assert [f.raw_label for f in report.findings] == ["S2", "S15"]
    result = mapper.map_report(report, request_id="r")
    assert labels_of(result) == ["illicit.other", "other.unknown"]
    unknown = finding_for(result, "other.unknown")
    assert unknown["needs_review"] is True
    assert unknown["method"] == "fallback"
    assert unknown["source"]["raw_label"] == "S15"


def test_llama_guard_unsafe_without_code_is_reviewed(mapper: RulesMapper) -> None:
    result = mapper.map("llama-guard", "unsafe", request_id="r")
    assert labels_of(result) == ["other.unknown"]
    assert result["needs_review"] is True


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("", "expected 'safe' or 'unsafe' followed by hazard codes (S1-S14), got empty output"),
        ("   \n", "got empty output"),
        ("maybe", "got 5 characters of other text"),
        ("safe\nS1", "got 'safe' followed by 1 more token(s)"),
        ("unsafe\nviolent crimes", "token 1 after 'unsafe' is not of the form S<number>"),
        ("unsafe\nS1,X2", "token 2 after 'unsafe' is not of the form S<number>"),
        ({"verdict": "unsafe"}, "expected the model's text verdict, got dict"),
        (["safe"], "expected the model's text verdict, got list"),
        (b"\xff\xfe", "output is not UTF-8 text"),
    ],
)
def test_llama_guard_malformed_output_is_rejected(output: Any, message: str) -> None:
    with pytest.raises(DetectorOutputError) as caught:
        read_llama_guard(output)
    assert caught.value.message.startswith("llama-guard: ")
    assert message in caught.value.message


def test_llama_guard_error_never_quotes_the_output() -> None:
    rambling = "I'm sorry, but the user wrote: my card number is 4111 1111 1111 1111. " * 20
    with pytest.raises(DetectorOutputError) as caught:
        read_llama_guard(rambling)
    assert "4111" not in caught.value.message
    assert len(caught.value.message) < 200


# --- Detoxify -------------------------------------------------------------------------------------

# predict() of the 'original' model on one text, as Detoxify's README prints it.
DETOXIFY_ORIGINAL = {
    "toxicity": 0.98,
    "severe_toxicity": 0.12,
    "obscene": 0.71,
    "threat": 0.02,
    "insult": 0.91,
    "identity_attack": 0.03,
}


def test_detoxify_single_text(mapper: RulesMapper) -> None:
    report = read_detoxify(DETOXIFY_ORIGINAL)
    assert len(report.findings) == 6
    assert report.explicit_no_finding is False
    result = mapper.map_report(report, request_id="r")
    assert labels_of(result) == ["toxicity.general", "toxicity.insult", "toxicity.profanity"]
    assert finding_for(result, "toxicity.insult")["source"] == {
        "detector": "detoxify",
        "raw_label": "insult",
        "score": 0.91,
    }


def test_detoxify_numpy_scores_and_json_text_are_accepted(mapper: RulesMapper) -> None:
    # predict() on one string returns numpy float32 scalars; numpy is not a core dependency.
    np = pytest.importorskip("numpy")
    from_numpy = read_detoxify(
        {label: np.float32(score) for label, score in DETOXIFY_ORIGINAL.items()}
    )
    from_text = read_detoxify(json.dumps(DETOXIFY_ORIGINAL))
    assert [f.raw_label for f in from_numpy.findings] == [f.raw_label for f in from_text.findings]
    assert labels_of(mapper.map_report(from_numpy, request_id="r")) == labels_of(
        mapper.map_report(from_text, request_id="r")
    )


def test_detoxify_all_below_threshold_is_no_finding(mapper: RulesMapper) -> None:
    clean = dict.fromkeys(DETOXIFY_ORIGINAL, 0.0007)
    report = read_detoxify(clean)
    assert report.explicit_no_finding is True
    assert labels_of(mapper.map_report(report, request_id="r")) == ["other.no_finding"]


def test_detoxify_threshold_is_the_tables() -> None:
    scores = {"toxicity": 0.8, "insult": 0.3}
    default = RulesMapper(tables={"detoxify": load_table("detoxify")})
    strict = RulesMapper(tables={"detoxify": load_table("detoxify", min_score=0.9)})
    lenient = RulesMapper(tables={"detoxify": load_table("detoxify", min_score=0.25)})
    assert labels_of(default.map("detoxify", scores, request_id="r")) == ["toxicity.general"]
    assert labels_of(strict.map("detoxify", scores, request_id="r")) == ["other.no_finding"]
    assert labels_of(lenient.map("detoxify", scores, request_id="r")) == [
        "toxicity.general",
        "toxicity.insult",
    ]
    # Exactly at the threshold counts.
    assert labels_of(default.map("detoxify", {"threat": 0.5}, request_id="r")) == [
        "toxicity.threat"
    ]


def test_detoxify_batch_yields_findings_for_every_index(mapper: RulesMapper) -> None:
    batch = {
        "toxicity": [0.97, 0.01, 0.88],
        "severe_toxicity": [0.2, 0.0, 0.1],
        "obscene": [0.1, 0.0, 0.02],
        "threat": [0.81, 0.0, 0.01],
        "insult": [0.3, 0.0, 0.6],
        "identity_attack": [0.02, 0.0, 0.01],
        "sexual_explicit": [0.01, 0.0, 0.77],
    }
    report = read_detoxify(batch)
    assert len(report.findings) == 21
    assert {f.attributes["index"] for f in report.findings} == {0, 1, 2}
    result = mapper.map_report(report, request_id="r")
    by_index: dict[int, set[str]] = {}
    for finding in result["findings"]:
        raw = finding["source"]["raw_label"]
        index = next(
            f.attributes["index"]
            for f in report.findings
            if f.raw_label == raw and f.score == pytest.approx(finding["source"]["score"])
        )
        by_index.setdefault(index, set()).add(finding["label"])
    assert by_index == {
        0: {"toxicity.general", "toxicity.threat"},
        2: {"toxicity.general", "toxicity.insult", "sexual.adult"},
    }


def test_detoxify_empty_batch_is_no_finding() -> None:
    report = read_detoxify({"toxicity": [], "insult": []})
    assert report.findings == ()
    assert report.explicit_no_finding is True


def test_detoxify_original_jigsaw_head_names(mapper: RulesMapper) -> None:
    raw_heads = {
        "toxic": 0.9,
        "severe_toxic": 0.6,
        "obscene": 0.1,
        "threat": 0.0,
        "insult": 0.2,
        "identity_hate": 0.7,
    }
    result = mapper.map("detoxify", raw_heads, request_id="r")
    assert labels_of(result) == ["hate.other", "toxicity.general"]


def test_detoxify_identity_mentions_alone_are_not_findings(mapper: RulesMapper) -> None:
    # The unbiased model on a civil comment that mentions religion and gender.
    scores = {
        "toxicity": 0.04,
        "severe_toxicity": 0.0,
        "obscene": 0.0,
        "identity_attack": 0.03,
        "insult": 0.01,
        "threat": 0.0,
        "sexual_explicit": 0.0,
        "male": 0.1,
        "female": 0.92,
        "homosexual_gay_or_lesbian": 0.0,
        "christian": 0.0,
        "jewish": 0.0,
        "muslim": 0.95,
        "black": 0.0,
        "white": 0.0,
        "psychiatric_or_mental_illness": 0.0,
    }
    report = read_detoxify(scores)
    assert report.explicit_no_finding is True
    assert not any(f.raw_label in {"female", "muslim"} for f in report.findings)
    assert labels_of(mapper.map_report(report, request_id="r")) == ["other.no_finding"]


def test_detoxify_identity_attack_names_the_mentioned_groups(mapper: RulesMapper) -> None:
    scores = {"toxicity": 0.9, "identity_attack": 0.85, "muslim": 0.95, "female": 0.7, "black": 0.2}
    report = read_detoxify(scores)
    attacks = [f for f in report.findings if f.raw_label.startswith("identity_attack")]
    assert [(f.raw_label, f.score, f.attributes) for f in attacks] == [
        ("identity_attack/female", 0.85, {"identity": "female", "identity_score": 0.7}),
        ("identity_attack/muslim", 0.85, {"identity": "muslim", "identity_score": 0.95}),
    ]
    result = mapper.map_report(report, request_id="r")
    assert labels_of(result) == ["hate.gender", "hate.religion", "toxicity.general"]


def test_detoxify_identity_attack_without_mention_is_hate_other(mapper: RulesMapper) -> None:
    result = mapper.map("detoxify", {"identity_attack": 0.8, "black": 0.3}, request_id="r")
    assert labels_of(result) == ["hate.other"]


@pytest.mark.parametrize(
    ("identity", "label"),
    [
        ("homosexual_gay_or_lesbian", "hate.sexual_orientation"),
        ("white", "hate.race_ethnicity"),
        ("jewish", "hate.religion"),
        ("psychiatric_or_mental_illness", "hate.disability"),
        ("male", "hate.gender"),
    ],
)
def test_detoxify_identity_groups(identity: str, label: str, mapper: RulesMapper) -> None:
    result = mapper.map("detoxify", {"identity_attack": 0.7, identity: 0.8}, request_id="r")
    assert labels_of(result) == [label]


def test_detoxify_negative_class_names_never_match_toxicity(mapper: RulesMapper) -> None:
    result = mapper.map(
        "detoxify", {"nontoxic": 0.97, "non_toxic": 0.96, "toxicity": 0.02}, request_id="r"
    )
    assert "toxicity.general" not in labels_of(result)
    assert labels_of(result) == ["other.unknown"]
    assert result["needs_review"] is True


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ([0.9, 0.1], "expected a JSON object of label scores, got a list"),
        ({}, "expected at least one label score, got an empty object"),
        ({"toxicity": "high"}, "score of 'toxicity' must be a number, got a string"),
        ({"toxicity": True}, "score of 'toxicity' must be a number, got a boolean"),
        ({"toxicity": None}, "score of 'toxicity' must be a number, got null"),
        ({"toxicity": 1.2}, "score of 'toxicity' must be a probability between 0 and 1"),
        ({"toxicity": float("nan")}, "must be a probability between 0 and 1"),
        (
            {"toxicity": 0.9, "insult": [0.1]},
            "label 'insult' has a list while others have single scores",
        ),
        ({"toxicity": [0.9, 0.2], "insult": [0.1]}, "batch score lists differ in length ([1, 2])"),
        ({"toxicity": [0.9, "x"]}, "score of 'toxicity[1]' must be a number, got a string"),
        ('{"toxicity": 0.9', "output is not JSON"),
    ],
)
def test_detoxify_malformed_output_is_rejected(output: Any, message: str) -> None:
    with pytest.raises(DetectorOutputError) as caught:
        read_detoxify(output)
    assert caught.value.message.startswith("detoxify: ")
    assert message in caught.value.message


# --- Registry, shipped tables and coverage --------------------------------------------------------


def test_readers_are_registered() -> None:
    assert set(DETECTORS) <= set(known_detectors())
    assert read("llama-guard", "unsafe\nS9").findings[0].raw_label == "S9"


@pytest.mark.parametrize(
    ("detector", "output", "expected"),
    [
        ("azure-content-safety", AZURE_ANALYZE, ["hate.other"]),
        (
            "openai-moderation",
            OPENAI_EXAMPLE,
            ["toxicity.harassment", "toxicity.threat", "violence.general", "violence.graphic"],
        ),
        ("llama-guard", "unsafe\nS4", ["sexual.minors"]),
        (
            "detoxify",
            DETOXIFY_ORIGINAL,
            ["toxicity.general", "toxicity.insult", "toxicity.profanity"],
        ),
    ],
)
def test_shipped_tables_end_to_end(detector: str, output: Any, expected: list[str]) -> None:
    result = RulesMapper().map(detector, output, request_id="e2e")
    assert labels_of(result) == expected
    assert result["provenance"]["mapping_table_version"] == f"{detector}@1.0.0"


def test_content_labels_reached_by_these_tables() -> None:
    reached = {
        label
        for d in DETECTORS
        for entry in load_table(d).entries.values()
        for label in entry.labels
    }
    assert reached == {
        "hate.disability",
        "hate.gender",
        "hate.other",
        "hate.race_ethnicity",
        "hate.religion",
        "hate.sexual_orientation",
        "illicit.other",
        "misinformation.defamation",
        "misinformation.elections",
        "misinformation.general",
        "pii.other",
        "policy.intellectual_property",
        "policy.other",
        "policy.specialized_advice",
        "security.jailbreak",
        "security.prompt_injection",
        "security.tool_abuse",
        "self_harm.general",
        "self_harm.instructions",
        "self_harm.intent",
        "sexual.adult",
        "sexual.minors",
        "toxicity.general",
        "toxicity.harassment",
        "toxicity.insult",
        "toxicity.profanity",
        "toxicity.threat",
        "violence.general",
        "violence.graphic",
        "violence.weapons",
    }
