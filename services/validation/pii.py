"""The PII scanner behind the pii check: Presidio over distinct texts, in batches."""

from __future__ import annotations

from llama_mapper.validation.checks import PII_ENTITIES

BATCH_SIZE = 128


class PresidioScanner:
    """texts -> whether each carries a PII_ENTITIES entity at or above min_score."""

    def __init__(self, min_score: float) -> None:
        self.min_score = min_score

    def __call__(self, texts: list[str]) -> list[bool]:
        if not texts:
            return []
        from presidio_analyzer import BatchAnalyzerEngine

        from llama_mapper.core.runners import presidio_analyzer

        batch = BatchAnalyzerEngine(presidio_analyzer())
        results = batch.analyze_iterator(
            texts,
            language="en",
            batch_size=BATCH_SIZE,
            entities=list(PII_ENTITIES),
            score_threshold=self.min_score,
        )
        return [bool(found) for found in results]
