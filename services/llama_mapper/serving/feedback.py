"""Feedback on answers: which arm answered a request, and whether its labels were right."""

# Feedback moves canary decisions, so it is counted once per request id (a repeat returns the
# first verdict) and only from the tenant that made the request (another tenant's request id is
# NOT_FOUND, as an unknown one is).

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass

from llama_mapper.domain.errors import InvalidArgument, NotFound


@dataclass
class Answered:
    tenant: str
    arm: str
    labels: frozenset[str]
    revision: int
    verdict: bool | None = None  # set by the first feedback


class FeedbackLog:
    """The last `memory` answers, oldest forgotten first."""

    def __init__(self, memory: int) -> None:
        self.memory = memory
        self._answers: OrderedDict[str, Answered] = OrderedDict()

    def remember(
        self, request_id: str, tenant: str, arm: str, labels: frozenset[str], revision: int
    ) -> None:
        self._answers[request_id] = Answered(tenant, arm, labels, revision)
        self._answers.move_to_end(request_id)
        while len(self._answers) > self.memory:
            self._answers.popitem(last=False)

    def record(
        self,
        request_id: str,
        tenant: str,
        *,
        labels: Sequence[str] | None,
        verdict: str | None,
        taxonomy: Container[str],
        count: Callable[[Answered, bool], None],
    ) -> dict[str, object]:
        """The verdict on `request_id`; `count` runs only the first time."""
        answered = self._answers.get(request_id)
        if answered is None or answered.tenant != tenant:
            raise NotFound(f"request {request_id!r} is unknown or too old for feedback")
        if labels is not None:
            unknown = [label for label in labels if label not in taxonomy]
            if unknown:
                raise InvalidArgument(f"$.labels: {len(unknown)} label(s) are not in the taxonomy")
            correct = frozenset(labels) == answered.labels
        else:
            correct = verdict == "correct"
        repeated = answered.verdict is not None
        if not repeated:
            answered.verdict = correct
            count(answered, correct)
        return {
            "request_id": request_id,
            "arm": answered.arm,
            "correct": answered.verdict,
            "counted": not repeated,
        }
