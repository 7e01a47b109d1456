"""Real detector output: Presidio and detect-secrets run here over Faker text; their findings are read
with the shipped readers and labelled by the rules mapper (table, then alias, then other.unknown)."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from llama_mapper.domain.findings import NormalizedFinding
from llama_mapper.domain.readers.base import read
from llama_mapper.domain.rows import NO_FINDING as NO_FINDING_SOURCE
from llama_mapper.domain.rows import REAL, Candidate
from llama_mapper.domain.rules import RulesMapper
from llama_mapper.domain.taxonomy import NO_FINDING

log = logging.getLogger(__name__)

# spaCy's nlp.pipe amortizes its per-call overhead over a batch: about 12 ms per short text here
# against 15-30 ms for one analyze() call per text.
PRESIDIO_BATCH_SIZE = 64


def run_presidio_batch(texts: list[str], *, progress: bool = True) -> list[list[dict[str, Any]]]:
    """Presidio's native output (RecognizerResult.to_dict() per result) for every text, in order."""
    from presidio_analyzer import BatchAnalyzerEngine

    from llama_mapper.inference.scanners import presidio_analyzer

    batch = BatchAnalyzerEngine(presidio_analyzer())
    outputs: list[list[dict[str, Any]]] = []
    bar = tqdm(total=len(texts), desc="presidio", unit="text", disable=not progress)
    for start in range(0, len(texts), PRESIDIO_BATCH_SIZE):
        chunk = texts[start : start + PRESIDIO_BATCH_SIZE]
        results = batch.analyze_iterator(chunk, language="en", batch_size=PRESIDIO_BATCH_SIZE)
        outputs.extend([r.to_dict() for r in result] for result in results)
        bar.update(len(chunk))
    bar.close()
    return outputs


def run_detect_secrets_batch(texts: list[str]) -> list[dict[str, Any]]:
    """detect-secrets' native JSON report (the baseline format) for every text, scanned as one file
    each with the default plugins and filters."""
    from detect_secrets import SecretsCollection
    from detect_secrets.core import baseline
    from detect_secrets.settings import default_settings

    with tempfile.TemporaryDirectory() as tmp, default_settings():
        names = []
        for i, text in enumerate(texts):
            name = f"doc{i:06d}.txt"
            Path(tmp, name).write_text(text, encoding="utf-8")
            names.append(name)
        collection = SecretsCollection(root=tmp)
        collection.scan_files(*names, num_processors=1)
        report = baseline.format_for_output(collection)
    reports = []
    for name in names:
        results = [{**secret, "filename": name} for secret in report["results"].get(name, [])]
        reports.append(
            {
                "version": report["version"],
                "plugins_used": report["plugins_used"],
                "filters_used": report["filters_used"],
                "results": {name: results} if results else {},
                # A fixed timestamp: the report is data, and the build must be deterministic.
                "generated_at": "2026-01-01T00:00:00Z",
            }
        )
    return reports


def label_findings(
    detector: str, outputs: Iterable[Any], rules: RulesMapper, source: str = REAL
) -> Iterator[Candidate]:
    """Reads each native output and labels every finding as the rules would; an output with no
    findings (or none above threshold) is an other.no_finding example."""
    for output in outputs:
        report = read(detector, output)
        for finding in report.findings:
            match = rules.match(finding)
            if match is None:
                yield Candidate.of(finding, (NO_FINDING,), NO_FINDING_SOURCE)
            else:
                yield Candidate.of(finding, match.labels, source)
        if not report.findings and report.explicit_no_finding:
            yield Candidate.of(NormalizedFinding(detector, ""), (NO_FINDING,), NO_FINDING_SOURCE)


def real_candidates(
    pii_texts: list[str], secret_texts: list[str], rules: RulesMapper, *, progress: bool = True
) -> list[Candidate]:
    presidio_outputs = run_presidio_batch(pii_texts, progress=progress)
    secrets_outputs = run_detect_secrets_batch(secret_texts)
    candidates = [
        *label_findings("presidio", presidio_outputs, rules),
        *label_findings("detect-secrets", secrets_outputs, rules),
    ]
    log.info(
        "real detectors: %d presidio texts, %d secret texts, %d findings",
        len(pii_texts),
        len(secret_texts),
        len(candidates),
    )
    return candidates
