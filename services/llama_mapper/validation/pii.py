"""The PII scanner behind the pii check: Presidio over distinct texts, in batches."""

from __future__ import annotations

import threading

from llama_mapper.validation.checks import PII_ENTITIES

BATCH_SIZE = 128
# Every PII_ENTITIES recognizer is a pattern (or phonenumbers) recognizer: it reads spaCy's tokens
# and lemmas for context words, never its parser or its named entities. Those two components are
# most of spaCy's time, and the check reads every prompt, so they are switched off for the scan
# (identical results and scores, 3-5x faster: measured on the small build). The pipeline is shared by
# the process, so scans take turns and put the components back when done.
_UNUSED_PIPES = ("parser", "ner")
_pipeline_lock = threading.Lock()


# Outputs are labels and templated assessments: the same texts come back in every validation, so
# answers are kept per (min_score, text), bounded.
_CACHE_LIMIT = 200_000
_cache: dict[tuple[float, str], bool] = {}


class PresidioScanner:
    """texts -> whether each carries a PII_ENTITIES entity at or above min_score."""

    def __init__(self, min_score: float) -> None:
        self.min_score = min_score

    def __call__(self, texts: list[str]) -> list[bool]:
        missing = [t for t in dict.fromkeys(texts) if (self.min_score, t) not in _cache]
        if missing:
            if len(_cache) + len(missing) > _CACHE_LIMIT:
                _cache.clear()
            _cache.update(
                ((self.min_score, t), hit)
                for t, hit in zip(missing, self._scan(missing), strict=True)
            )
        return [_cache[(self.min_score, t)] for t in texts]

    def _scan(self, texts: list[str]) -> list[bool]:
        from presidio_analyzer import BatchAnalyzerEngine

        from llama_mapper.inference.scanners import presidio_analyzer

        engine = presidio_analyzer()
        nlp = engine.nlp_engine.nlp["en"]
        batch = BatchAnalyzerEngine(engine)
        with (
            _pipeline_lock,
            nlp.select_pipes(disable=[name for name in _UNUSED_PIPES if name in nlp.pipe_names]),
        ):
            results = batch.analyze_iterator(
                texts,
                language="en",
                batch_size=BATCH_SIZE,
                entities=list(PII_ENTITIES),
                score_threshold=self.min_score,
            )
            return [bool(found) for found in results]
