"""The hybrid analyst as serving runs it: the rubric for risk and controls, the model for the
remediation, the rubric's catalogue when the model cannot help."""

# What is a function of the label, the framework and the context (the controls the framework maps,
# the risk level after the modifiers) is answered by domain/rubric.py with `method: rule`, exactly.
# The model writes only the remediation: its answer (the risk-first JSON it was trained on, decoded
# under rubric.completion_schema) is used for that one field, and only when it parses and keeps
# within the bounds (at most MAX_STEPS steps of MAX_STEP_CHARS). A model that is absent, slow or
# invalid never fails the request: the catalogue answers, `methods.remediation` says `fallback`
# and `fallback_reason` why. `analyze` is the one decision; serving (/v1/analyze, gRPC Analyze),
# evaluation and `mapperctl analyze` all call it, so what is evaluated is what is served.

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Protocol

from llama_mapper.domain import rubric
from llama_mapper.domain.frameworks import FrameworkMappings
from llama_mapper.domain.prompt import analyst_messages
from llama_mapper.domain.rubric import MAX_STEP_CHARS, MAX_STEPS, Query
from llama_mapper.domain.schemas import validate

log = logging.getLogger(__name__)

# Why the remediation is the catalogue's (schemas/analyst-output.json `fallback_reason`).
NO_MODEL, UNAVAILABLE, TIMEOUT, INVALID = "no_model", "unavailable", "timeout", "invalid"
DEFAULT_DEADLINE_S = 5.0


class AnalystModel(Protocol):
    """An engine with the analyst adapter selected: one raw completion per query, in order, for
    the prompts of `messages(query)` (constrained to `schema(query)` where the engine can)."""

    def analyze(self, queries: Sequence[Query]) -> list[str]: ...


def messages(q: Query) -> list[dict[str, str]]:
    """The prompt the analyst adapter sees for a query (training, evaluation and serving)."""
    finding: dict[str, Any] = {"label": q.label}
    if q.confidence is not None:
        finding["confidence"] = q.confidence
    return analyst_messages(q.framework, finding, q.context)


def schema(q: Query, frameworks: FrameworkMappings | None = None) -> dict[str, Any]:
    """The grammar the model decodes under: the four levels, the framework's ids, bounded steps."""
    return rubric.completion_schema(q.framework, frameworks)


def model_remediation(completion: str | None) -> list[str] | None:
    """The model's remediation steps when its answer parses and keeps within the bounds."""
    if not completion:
        return None
    try:
        value = json.loads(completion)
    except (ValueError, RecursionError):
        return None
    steps = value.get("remediation") if isinstance(value, dict) else None
    if not isinstance(steps, list) or not 1 <= len(steps) <= MAX_STEPS:
        return None
    cleaned: list[str] = []
    for step in steps:
        if not isinstance(step, str):
            return None
        text = " ".join(step.split())
        if not text or len(text) > MAX_STEP_CHARS or not text.isprintable() or text in cleaned:
            return None
        cleaned.append(text)
    return cleaned


def analyze(
    q: Query,
    completion: str | None = None,
    *,
    failure: str = NO_MODEL,
    frameworks: FrameworkMappings | None = None,
) -> dict[str, Any]:
    """The assessment (schemas/analyst-output.json): risk level and controls from the rubric,
    remediation from `completion` when it is valid, else the catalogue's. `completion` is None
    when the model was not asked or failed; `failure` then says why."""
    assessment = rubric.assess(q, frameworks)
    steps = model_remediation(completion)
    if steps is not None:
        assessment["remediation"] = steps
        method = "model"
    else:
        method = "fallback"
        assessment["fallback_reason"] = INVALID if completion is not None else failure
    assessment["methods"] = {"risk_level": "rule", "controls": "rule", "remediation": method}
    validate("analyst-output", assessment)
    return assessment


def analyze_batch(
    queries: Sequence[Query],
    model: AnalystModel | None,
    *,
    deadline_s: float | None = None,
    frameworks: FrameworkMappings | None = None,
) -> list[dict[str, Any]]:
    """`analyze` over a batch, the model asked once for all of it (evaluation, the CLI). With a
    deadline the model runs on a worker thread and a late batch falls back as a whole."""
    if model is None or not queries:
        return [analyze(q, frameworks=frameworks) for q in queries]
    try:
        if deadline_s is None:
            completions = model.analyze(queries)
        else:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="analyst-model") as pool:
                completions = pool.submit(model.analyze, queries).result(timeout=deadline_s)
    except FutureTimeout:
        log.warning("analyst model missed the %.2fs deadline: fallback", deadline_s)
        return [analyze(q, failure=TIMEOUT, frameworks=frameworks) for q in queries]
    except Exception as exc:
        log.warning("analyst model failed (%s): fallback", type(exc).__name__)
        return [analyze(q, failure=UNAVAILABLE, frameworks=frameworks) for q in queries]
    if len(completions) != len(queries):
        log.warning("analyst model answered %d of %d: fallback", len(completions), len(queries))
        return [analyze(q, failure=INVALID, frameworks=frameworks) for q in queries]
    return [analyze(q, c, frameworks=frameworks) for q, c in zip(queries, completions, strict=True)]


async def analyze_async(
    q: Query,
    complete: Callable[[list[dict[str, str]], dict[str, Any]], Awaitable[str]] | None,
    *,
    deadline_s: float = DEFAULT_DEADLINE_S,
    frameworks: FrameworkMappings | None = None,
) -> dict[str, Any]:
    """`analyze` for the Serve router: `complete(messages, json_schema)` is the engine's chat
    call, awaited under the deadline; None when no analyst adapter is loaded."""
    if complete is None:
        return analyze(q, frameworks=frameworks)
    try:
        text = await asyncio.wait_for(complete(messages(q), schema(q, frameworks)), deadline_s)
    except TimeoutError:
        log.warning("analyst model missed the %.2fs deadline: fallback", deadline_s)
        return analyze(q, failure=TIMEOUT, frameworks=frameworks)
    except Exception as exc:
        log.warning("analyst model failed (%s): fallback", type(exc).__name__)
        return analyze(q, failure=UNAVAILABLE, frameworks=frameworks)
    return analyze(q, text, frameworks=frameworks)
