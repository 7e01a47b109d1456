"""The router's logic without Ray or HTTP: A/B arm, hybrid mapping, stats, feedback, shadowing.

`RouterCore` is driven by the Serve deployment (router.py) and by tests directly. It talks to the
model through `EngineClient` (the engine deployment's handle, or anything with the same methods)
and learns the rollout from `RolloutSource` (the registry). Nothing here fails a request because
the model is unavailable: the hybrid mapper's fallback answers instead, and the arm's statistics
record it so the canary controller can roll back.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from llama_mapper.core.errors import InvalidArgument, NotFound, Unavailable
from llama_mapper.core.hybrid import (
    INVALID,
    NO_MODEL,
    TIMEOUT,
    UNAVAILABLE,
    HybridMapper,
    ModelArm,
    Outcome,
)
from llama_mapper.core.inference import MapperQuery, Prediction
from llama_mapper.core.prompt import analyst_messages
from llama_mapper.core.schemas import load_schema, validate
from llama_mapper.serving.ratelimit import RateLimiter
from llama_mapper.serving.routing import CONTROL, TREATMENT, RolloutView, assign, routing_key
from llama_mapper.serving.settings import ServingSettings
from llama_mapper.serving.stats import RolloutWindows, ServingMetrics

log = logging.getLogger(__name__)

LOCAL_VERSION = 0  # adapters from local directories (no registry) serve as version 0
_FAILED_RETRY_S = 30.0


class EngineClient(Protocol):
    """What the router needs from the engine deployment."""

    async def predict(
        self, adapter: str, queries: list[MapperQuery]
    ) -> tuple[list[Prediction], dict[str, Any]]: ...

    async def chat(
        self, messages: list[dict[str, str]], adapter: str | None, **kw: Any
    ) -> dict[str, Any]: ...

    async def load_version(self, model: str, version: int) -> dict[str, Any]: ...

    async def load_local(self, model: str, path: str) -> dict[str, Any]: ...

    async def adapters(self) -> list[dict[str, Any]]: ...


class RolloutSource(Protocol):
    """The registry as the router reads it (sync; called in a thread)."""

    def rollout(self, model: str) -> RolloutView | None: ...

    def champion(self, model: str, alias: str) -> int | None: ...

    def temperature(self, model: str, version: int) -> float: ...


@dataclass
class VersionState:
    model: str
    version: int
    status: str = "loading"  # loading | ready | failed
    adapter: str = ""
    temperature: float = 1.0
    error: str = ""
    since: float = 0.0

    @property
    def ready(self) -> bool:
        return self.status == "ready"


@dataclass(frozen=True)
class Mapped:
    result: dict[str, Any]
    arm: str | None
    version: int


class RouterCore:
    def __init__(
        self,
        settings: ServingSettings,
        engine: EngineClient | None,
        source: RolloutSource | None,
        *,
        metrics: ServingMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.source = source
        self.hybrid = HybridMapper(threshold=settings.threshold, deadline_s=settings.deadline_s)
        self.metrics = metrics or ServingMetrics()
        self.limiter = RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst)
        self.windows = RolloutWindows()
        self.rollout: RolloutView | None = None
        self.champion: dict[str, int] = {}
        self.versions: dict[tuple[str, int], VersionState] = {}
        self._answers: OrderedDict[str, tuple[str, frozenset[str], int]] = OrderedDict()
        self._refreshed_at = float("-inf")
        self._refresh_lock = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()

    # --- rollout state ---------------------------------------------------------------------------

    async def refresh(self, *, force: bool = False) -> None:
        """Re-reads the rollout and champions (at most every rollout_refresh_s) and loads versions."""
        if not force and time.monotonic() - self._refreshed_at < self.settings.rollout_refresh_s:
            return
        async with self._refresh_lock:
            if (
                not force
                and time.monotonic() - self._refreshed_at < self.settings.rollout_refresh_s
            ):
                return
            self._refreshed_at = time.monotonic()
            models = (self.settings.model, self.settings.analyst_model)
            if self.source is not None:
                try:
                    rollout = await asyncio.to_thread(self.source.rollout, self.settings.model)
                    for model in models:
                        version = await asyncio.to_thread(
                            self.source.champion, model, self.settings.champion_alias
                        )
                        if version:
                            self.champion[model] = version
                except Exception as exc:  # the registry being down must not stop mapping
                    log.warning("registry refresh failed (%s): keeping the last state", exc)
                    return
                self._set_rollout(rollout)
            else:
                for model in models:
                    if model in self.settings.local_adapters:
                        self.champion[model] = LOCAL_VERSION
            wanted = {(m, v) for m, v in self.champion.items()}
            if self.rollout is not None and self.rollout.active:
                wanted |= {
                    (self.settings.model, self.rollout.control_version),
                    (self.settings.model, self.rollout.treatment_version),
                }
            for model, version in wanted:
                self._ensure_loaded(model, version)

    def _set_rollout(self, rollout: RolloutView | None) -> None:
        self.rollout = rollout
        self.windows.for_revision(rollout.revision if rollout else 0)
        self.metrics.treatment_weight.set(
            rollout.treatment_weight if rollout and rollout.active else 0.0
        )

    def _ensure_loaded(self, model: str, version: int) -> None:
        if self.engine is None or (version <= 0 and model not in self.settings.local_adapters):
            return
        state = self.versions.get((model, version))
        if state is not None and (
            state.status != "failed" or time.monotonic() - state.since < _FAILED_RETRY_S
        ):
            return
        state = VersionState(model, version, since=time.monotonic())
        self.versions[(model, version)] = state
        self._spawn(self._load(state))

    async def _load(self, state: VersionState) -> None:
        assert self.engine is not None
        try:
            if state.version == LOCAL_VERSION:
                info = await self.engine.load_local(
                    state.model, str(self.settings.local_adapters[state.model])
                )
            else:
                info = await self.engine.load_version(state.model, state.version)
                if self.source is not None:
                    state.temperature = await asyncio.to_thread(
                        self.source.temperature, state.model, state.version
                    )
            state.adapter = info["name"]
            state.status = "ready"
            log.info("%s v%s ready as adapter %s", state.model, state.version, state.adapter)
        except Exception as exc:
            state.status, state.error, state.since = "failed", str(exc), time.monotonic()
            log.error("%s v%s failed to load: %s", state.model, state.version, exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _state(self, model: str, version: int) -> VersionState | None:
        return self.versions.get((model, version))

    # --- mapping ---------------------------------------------------------------------------------

    async def map_one(
        self,
        detector: str,
        output: Any,
        *,
        request_id: str | None = None,
        tenant: str | None = None,
        endpoint: str = "map",
    ) -> Mapped:
        await self.refresh()
        request_id = request_id or str(uuid.uuid4())
        started = time.perf_counter()
        model = self.settings.model
        assignment = assign(
            self.rollout,
            routing_key(tenant, request_id),
            champion_version=self.champion.get(model, 0),
        )
        active = self.rollout is not None and self.rollout.active
        plan = self.hybrid.plan(detector, output, request_id=request_id)  # InvalidArgument: 422

        arm_name, version = assignment.arm, assignment.version
        state = self._state(model, version)
        if plan.pending and assignment.arm == TREATMENT and not (state and state.ready):
            # Treatment cannot answer (still loading, or its artifact failed): control answers
            # the client; a failed treatment counts as an error on its arm so the canary rolls back.
            if state is not None and state.status == "failed":
                window = self.windows.arm(TREATMENT)
                window.requests += 1
                window.errors += 1
                self.metrics.errors.labels(TREATMENT, endpoint, "adapter_failed").inc()
            arm_name, version = CONTROL, self.rollout.control_version if self.rollout else 0
            state = self._state(model, version)

        arm = None
        if self.engine is not None and state is not None:
            arm = ModelArm(model, version or None, state.temperature, arm_name if active else None)
        outcome = await self._answer(plan, state, arm)

        latency = time.perf_counter() - started
        self._record(arm_name, endpoint, outcome, latency, counted=arm is not None)
        labels = frozenset(outcome.result["taxonomy"])
        self._remember(request_id, arm_name, labels)
        if assignment.mirror and plan.pending and arm_name == CONTROL and active:
            self._spawn(self._shadow(plan, labels))
        if active:
            outcome.result["provenance"]["router_arm"] = arm_name
        return Mapped(outcome.result, arm_name if active else None, version)

    async def _answer(self, plan: Any, state: VersionState | None, arm: ModelArm | None) -> Outcome:
        if not plan.pending or arm is None or state is None:
            return self.hybrid.finish(plan, None, arm=arm, failure=NO_MODEL)
        if not state.ready:
            return self.hybrid.finish(plan, None, arm=arm, failure=UNAVAILABLE)
        assert self.engine is not None
        try:
            predictions, description = await asyncio.wait_for(
                self.engine.predict(state.adapter, plan.queries), timeout=self.settings.deadline_s
            )
        except TimeoutError:
            return self.hybrid.finish(plan, None, arm=arm, failure=TIMEOUT)
        except Exception as exc:
            log.warning("engine failed (%s): fallback", type(exc).__name__)
            return self.hybrid.finish(plan, None, arm=arm, failure=UNAVAILABLE)
        return self.hybrid.finish(plan, predictions, arm=arm, description=description)

    async def _shadow(self, plan: Any, control_labels: frozenset[str]) -> None:
        """Mirrors a control request to treatment; only the agreement is recorded."""
        assert self.rollout is not None
        state = self._state(self.settings.model, self.rollout.treatment_version)
        if state is None or not state.ready:
            return
        arm = ModelArm(self.settings.model, state.version, state.temperature, TREATMENT)
        outcome = await self._answer(plan, state, arm)
        agree = frozenset(outcome.result["taxonomy"]) == control_labels
        window = self.windows.arm(TREATMENT)
        window.agreement_pairs += 1
        window.agreements += agree
        self.metrics.shadow.labels("agree" if agree else "disagree").inc()

    def _record(
        self, arm: str, endpoint: str, outcome: Outcome, latency: float, *, counted: bool
    ) -> None:
        window = self.windows.arm(arm)
        window.requests += 1
        window.latencies_ms.append(latency * 1000)
        if counted:
            window.model_queries += outcome.model_queries
            window.schema_valid += outcome.schema_valid
            window.fallbacks += sum(
                n for reason, n in outcome.fallbacks.items() if reason != NO_MODEL
            )
            self.metrics.model_queries.labels(arm).inc(outcome.model_queries)
            self.metrics.schema_valid.labels(arm).inc(outcome.schema_valid)
        for reason, n in outcome.fallbacks.items():
            self.metrics.fallbacks.labels(arm, reason).inc(n)
        for finding in outcome.result["findings"]:
            self.metrics.findings.labels(arm, finding["method"]).inc()
        self.metrics.requests.labels(arm, endpoint, "ok").inc()
        self.metrics.latency.labels(arm, endpoint).observe(latency)
        self.metrics.update_rates(self.windows)

    def record_error(self, endpoint: str, code: str) -> None:
        self.metrics.errors.labels("none", endpoint, code).inc()
        self.metrics.requests.labels("none", endpoint, code).inc()

    def _remember(self, request_id: str, arm: str, labels: frozenset[str]) -> None:
        self._answers[request_id] = (arm, labels, self.windows.revision)
        self._answers.move_to_end(request_id)
        while len(self._answers) > self.settings.feedback_memory:
            self._answers.popitem(last=False)

    async def map_batch(
        self, items: Sequence[Mapping[str, Any]], tenant: str | None
    ) -> list[Mapped]:
        """All items are read first (one invalid item fails the batch, naming it), then mapped."""
        for index, item in enumerate(items):
            try:
                self.hybrid.plan(item["detector"], item["output"])
            except InvalidArgument as exc:
                raise InvalidArgument(f"$.items[{index}].output: {exc.message}") from None
        return list(
            await asyncio.gather(
                *(
                    self.map_one(
                        item["detector"],
                        item["output"],
                        request_id=item.get("request_id"),
                        tenant=tenant,
                        endpoint="batch",
                    )
                    for item in items
                )
            )
        )

    # --- feedback, analyst, passthrough ----------------------------------------------------------

    def feedback(
        self, request_id: str, *, labels: Sequence[str] | None, verdict: str | None
    ) -> dict[str, Any]:
        remembered = self._answers.get(request_id)
        if remembered is None:
            raise NotFound(f"request {request_id!r} is unknown or too old for feedback")
        arm, answered, revision = remembered
        if labels is not None:
            unknown = [label for label in labels if label not in self.hybrid.taxonomy]
            if unknown:
                raise InvalidArgument(f"$.labels: not in the taxonomy: {unknown}")
            correct = frozenset(labels) == answered
        else:
            correct = verdict == "correct"
        if revision == self.windows.revision:
            window = self.windows.arm(arm)
            window.feedback += 1
            window.feedback_correct += correct
        self.metrics.feedback.labels(arm, "correct" if correct else "incorrect").inc()
        return {"request_id": request_id, "arm": arm, "correct": correct}

    def _adapter_for(self, model: str) -> VersionState:
        version = self.champion.get(model)
        state = self._state(model, version) if version is not None else None
        if self.engine is None or state is None or not state.ready:
            raise Unavailable(f"no {model!r} adapter is loaded")
        return state

    async def analyze(self, framework: str, finding: Mapping[str, Any]) -> dict[str, Any]:
        await self.refresh()
        state = self._adapter_for(self.settings.analyst_model)
        assert self.engine is not None
        schema = load_schema("analyst-output")
        answer = await asyncio.wait_for(
            self.engine.chat(
                analyst_messages(framework, finding),
                state.adapter,
                max_tokens=384,
                json_schema=schema,
            ),
            timeout=max(self.settings.deadline_s, 30.0),
        )
        import json

        try:
            assessment = json.loads(answer["text"])
            validate("analyst-output", assessment)
        except (ValueError, InvalidArgument) as exc:
            raise Unavailable(
                f"the analyst's answer failed validation ({exc}): try again"
            ) from None
        return {
            "assessment": assessment,
            "provenance": {"adapter": state.model, "adapter_version": state.version or None},
        }

    def resolve_chat_model(self, name: str) -> str | None:
        """OpenAI `model`: a registry model name (its champion), `<model>-v<N>`, or the base id."""
        for state in self.versions.values():
            if state.ready and name in (state.adapter, f"{state.model}-v{state.version}"):
                return state.adapter
        if name in self.champion:
            return self._adapter_for(name).adapter
        if name == self.settings.engine.base_model:
            return None
        raise NotFound(f"model {name!r} is not served (see GET /v1/models)")

    async def chat(
        self, model: str, messages: list[dict[str, str]], *, max_tokens: int, temperature: float
    ) -> dict[str, Any]:
        await self.refresh()
        if self.engine is None:
            raise Unavailable("the engine is not deployed (rules-only serving)")
        adapter = self.resolve_chat_model(model)
        return await self.engine.chat(
            messages, adapter, max_tokens=max_tokens, temperature=temperature
        )

    def models(self) -> list[dict[str, Any]]:
        out = [
            {
                "id": self.settings.engine.base_model,
                "object": "model",
                "owned_by": "llama-mapper",
                "kind": "base",
            }
        ]
        for state in sorted(self.versions.values(), key=lambda s: (s.model, s.version)):
            roles = [
                role
                for role, hit in (
                    (self.settings.champion_alias, self.champion.get(state.model) == state.version),
                    (
                        CONTROL,
                        bool(
                            self.rollout
                            and self.rollout.active
                            and self.rollout.control_version == state.version
                            and state.model == self.settings.model
                        ),
                    ),
                    (
                        TREATMENT,
                        bool(
                            self.rollout
                            and self.rollout.active
                            and self.rollout.treatment_version == state.version
                            and state.model == self.settings.model
                        ),
                    ),
                )
                if hit
            ]
            out.append(
                {
                    "id": state.adapter or f"{state.model}-v{state.version}",
                    "object": "model",
                    "owned_by": "llama-mapper",
                    "kind": "adapter",
                    "model": state.model,
                    "version": state.version,
                    "status": state.status,
                    "roles": roles,
                    "temperature": state.temperature,
                    **({"error": state.error} if state.error else {}),
                }
            )
        return out

    def rollout_stats(self) -> dict[str, Any]:
        out = self.windows.as_dict()
        out["rollout"] = None if self.rollout is None else self.rollout.__dict__.copy()
        return out

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "engine": self.engine is not None,
            "registry": self.source is not None,
            "adapters": {f"{s.model}-v{s.version}": s.status for s in self.versions.values()},
        }


__all__ = ["INVALID", "EngineClient", "Mapped", "RolloutSource", "RouterCore", "VersionState"]
