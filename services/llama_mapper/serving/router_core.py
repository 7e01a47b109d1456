"""The router's map path without Ray or HTTP: the arm by role, the hybrid, stats, shadowing."""

# `RouterCore` is driven by the Serve deployment (ingress.py) and by tests directly. It talks to
# the model through `EngineClient`s (adapters.py) and routes by a last-known-good snapshot that
# routing_state.py refreshes in the background, so neither a slow registry nor a failing model
# fails or delays a request: control's model or the hybrid mapper's fallback answers instead, and
# the arm's statistics record it so the canary controller can roll back.

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llama_mapper.domain.document import MAX_OUTPUTS, DetectorResult, build_document
from llama_mapper.domain.errors import InvalidArgument, NotFound
from llama_mapper.domain.result import CanonicalFinding
from llama_mapper.domain.schemas import load_schema
from llama_mapper.inference.hybrid import (
    NO_MODEL,
    TIMEOUT,
    UNAVAILABLE,
    HybridMapper,
    ModelArm,
    Outcome,
    Plan,
)
from llama_mapper.inference.model import MapperQuery, Prediction
from llama_mapper.platform.settings.serving import ServingSettings
from llama_mapper.serving.adapters import LOCAL_VERSION, AdapterPool, EngineClient, VersionState
from llama_mapper.serving.arms import (
    CONTROL,
    MAIN_ENGINE,
    TREATMENT,
    TREATMENT_ENGINE,
    RolloutView,
    assign,
    engine_for,
    placements,
    routing_key,
)
from llama_mapper.serving.feedback import FeedbackLog
from llama_mapper.serving.passthrough import Passthrough
from llama_mapper.serving.ratelimit import RateLimiter
from llama_mapper.serving.routing_state import RolloutSource, RoutingSnapshot, RoutingState
from llama_mapper.serving.stats import RolloutWindows, ServingMetrics

log = logging.getLogger(__name__)

# The result schema bounds the request id it echoes: one too long (an X-Request-Id header, a gRPC
# request_id) is the caller's bad input, refused before any work, not a result failing validation.
_REQUEST_ID_MAX = load_schema("mapper-output")["properties"]["provenance"]["properties"][
    "request_id"
]["maxLength"]


@dataclass(frozen=True)
class Mapped:
    result: dict[str, Any]
    arm: str | None
    version: int
    # The findings `result` was built from (a document merges them); empty for a document.
    findings: Sequence[CanonicalFinding] = ()


def _checked_request_id(request_id: str | None) -> str:
    request_id = request_id or str(uuid.uuid4())
    if len(request_id) > _REQUEST_ID_MAX:
        raise InvalidArgument(f"request id: at most {_REQUEST_ID_MAX} characters")
    return request_id


class EngineLost(Exception):
    """The treatment's own engine failed a request: control answers it instead."""


class RouterCore(Passthrough):
    def __init__(
        self,
        settings: ServingSettings,
        engine: EngineClient | None,
        source: RolloutSource | None,
        *,
        treatment_engine: EngineClient | None = None,
        metrics: ServingMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        # With a treatment engine the rollout's treatment is isolated on it (arms.engine_for).
        self.engines: dict[str, EngineClient] = {
            role: client
            for role, client in ((MAIN_ENGINE, engine), (TREATMENT_ENGINE, treatment_engine))
            if client is not None and engine is not None
        }
        self.isolated = TREATMENT_ENGINE in self.engines
        self.source = source
        models = (settings.model, settings.analyst_model)
        self.routing = RoutingState(
            source,
            models,
            settings.champion_alias,
            interval_s=settings.rollout_refresh_s,
            timeout_s=settings.registry_timeout_s,
            local_champions={m: LOCAL_VERSION for m in models if m in settings.local_adapters},
        )
        self.hybrid = HybridMapper(threshold=settings.threshold, deadline_s=settings.deadline_s)
        self.pool = AdapterPool(
            self.engines,
            local_adapters=dict(settings.local_adapters),
            calibration=self.routing.calibration if source is not None else None,
            spawn=self._spawn,
            recipe=self.hybrid.recipe,
        )
        self.metrics = metrics or ServingMetrics()
        self.limiter = RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst)
        self.tokens = settings.token_table()
        self.windows = RolloutWindows()
        self.feedback_log = FeedbackLog(settings.feedback_memory)
        self._background: set[asyncio.Task[Any]] = set()
        self._refresher: asyncio.Task[Any] | None = None
        self._watching = False

    # --- routing state (never on the request path) ------------------------------------------------

    @property
    def rollout(self) -> RolloutView | None:
        return self.routing.snapshot.rollout

    @property
    def champion(self) -> Mapping[str, int]:
        return self.routing.snapshot.champions

    @property
    def versions(self) -> dict[tuple[str, int, str], VersionState]:
        return self.pool.versions

    def start(self) -> None:
        """Starts the background refresh once (needs the running event loop); cheap to repeat."""
        if self._refresher is None or self._refresher.done():
            self._apply(self.routing.snapshot)
            self._refresher = asyncio.ensure_future(self.routing.run(self._apply))

    async def refresh(self, *, force: bool = False) -> None:
        """`force`: refresh now and wait for it (tests, warm-up); else make sure the background
        refresh runs, and return at once."""
        if force and await self.routing.refresh():
            self._apply(self.routing.snapshot)
        self.start()

    def _apply(self, snapshot: RoutingSnapshot) -> None:
        rollout = snapshot.rollout
        self.windows.for_revision(rollout.revision if rollout else 0)
        live = rollout is not None and rollout.live(time.time())
        self.metrics.treatment_weight.set(rollout.treatment_weight if live else 0.0)
        if self.isolated and not self._watching:
            self._watching = True
            self._spawn(
                self.pool.watch(
                    TREATMENT_ENGINE,
                    lambda: self.rollout is not None and self.rollout.active,
                    self.settings.treatment_probe_s,
                    self.settings.treatment_probe_timeout_s,
                )
            )
        wanted = placements(
            rollout, snapshot.champions, self.settings.model, isolated=self.isolated
        )
        for model, version, engine in sorted(wanted):
            self.pool.ensure_loaded(model, version, engine)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- mapping ---------------------------------------------------------------------------------

    async def map_one(
        self,
        detector: str,
        output: Any,
        *,
        request_id: str | None = None,
        tenant: str | None = None,
        endpoint: str = "map",
        scope: str | None = None,
    ) -> Mapped:
        """`tenant` keeps a tenant on its arm; `scope` (default: the tenant) is who may give
        feedback on the answer."""
        self.start()
        request_id = _checked_request_id(request_id)
        started = time.perf_counter()
        plan = self.hybrid.plan(detector, output, request_id=request_id)  # InvalidArgument: 422
        mapped, arm_name = await self._route(plan, tenant, endpoint, started)
        self._remember(request_id, scope, tenant, arm_name, mapped.result["taxonomy"])
        return mapped

    async def map_document(
        self,
        outputs: Sequence[Mapping[str, Any]],
        *,
        text: str | None = None,
        text_sha256: str | None = None,
        request_id: str | None = None,
        tenant: str | None = None,
        scope: str | None = None,
    ) -> Mapped:
        """Several detectors' outputs for one text: each mapped as map_one maps it, all routed
        by the document's key (one arm answers the document), then merged into one document
        result (domain/document.py). Every output is read first: one invalid output fails the
        document, naming it. Feedback is on the document's request id and labels."""
        self.start()
        request_id = _checked_request_id(request_id)
        if not 1 <= len(outputs) <= MAX_OUTPUTS:
            raise InvalidArgument(f"$.outputs: 1 to {MAX_OUTPUTS} outputs, got {len(outputs)}")
        started = time.perf_counter()
        plans = []
        for index, item in enumerate(outputs):
            try:
                plans.append(
                    self.hybrid.plan(item["detector"], item["output"], request_id=request_id)
                )
            except InvalidArgument as exc:
                raise InvalidArgument(f"$.outputs[{index}].output: {exc.message}") from None
        routed = await asyncio.gather(
            *(self._route(plan, tenant, "document", started) for plan in plans)
        )
        document = build_document(
            [
                DetectorResult(plan.detector, mapped.result, mapped.findings)
                for plan, (mapped, _) in zip(plans, routed, strict=True)
            ],
            taxonomy=self.hybrid.taxonomy,
            request_id=request_id,
            text=text,
            text_sha256=text_sha256,
        )
        # Every output was routed by the document's key, so they share an arm, unless a
        # treatment that could not answer sent the ones it had to answer to control: then
        # control is what answered the document's model part.
        mapped, arm_name = min(routed, key=lambda pair: pair[1] != CONTROL)
        self._remember(request_id, scope, tenant, arm_name, document["taxonomy"])
        return Mapped(document, mapped.arm, mapped.version)

    async def _route(
        self, plan: Plan, tenant: str | None, endpoint: str, started: float
    ) -> tuple[Mapped, str]:
        """The plan answered by the arm its request key is assigned (or by control when that
        arm cannot answer); the Mapped result and the arm's name, live or not."""
        request_id = plan.request_id
        model = self.settings.model
        rollout = self.rollout
        now = time.time()
        assignment = assign(
            rollout,
            routing_key(tenant, request_id),
            champion_version=self.champion.get(model, 0),
            now=now,
        )
        live = rollout is not None and rollout.live(now)

        arm_name, version = assignment.arm, assignment.version
        state = self.pool.state(model, version, engine_for(arm_name, isolated=self.isolated))
        if plan.pending and assignment.arm == TREATMENT and not (state and state.ready):
            # Treatment cannot answer (still loading, or its artifact or its engine failed):
            # control answers the client; a failed treatment counts as an error on its arm so the
            # canary rolls back.
            if state is not None and state.status == "failed":
                lost = state.engine_lost
                self._treatment_error(endpoint, "engine_unavailable" if lost else "adapter_failed")
            arm_name, version = CONTROL, rollout.control_version if rollout else 0
            state = self.pool.state(model, version)

        arm = self._arm(arm_name, state, live)
        asked = time.perf_counter()
        try:
            outcome = await self._answer(plan, state, arm)
        except EngineLost:
            # The treatment's own engine died or errored on this request: control answers it
            # within what is left of the deadline, and the treatment is charged with an error.
            self._treatment_error(endpoint, "engine_unavailable")
            arm_name, version = CONTROL, rollout.control_version if rollout else 0
            state = self.pool.state(model, version)
            arm = self._arm(arm_name, state, live)
            left = self.settings.deadline_s - (time.perf_counter() - asked)
            outcome = await self._answer(plan, state, arm, timeout=left)

        latency = time.perf_counter() - started
        self._record(arm_name, endpoint, outcome, latency, counted=arm is not None)
        if assignment.mirror and plan.pending and arm_name == CONTROL and live:
            self._spawn(self._shadow(plan, frozenset(outcome.result["taxonomy"])))
        if live:
            outcome.result["provenance"]["router_arm"] = arm_name
        mapped = Mapped(outcome.result, arm_name if live else None, version, outcome.findings)
        return mapped, arm_name

    def _remember(
        self,
        request_id: str,
        scope: str | None,
        tenant: str | None,
        arm_name: str,
        labels: Sequence[str],
    ) -> None:
        self.feedback_log.remember(
            request_id,
            scope if scope is not None else tenant or "",
            arm_name,
            frozenset(labels),
            self.windows.revision,
        )

    def _arm(self, arm_name: str, state: VersionState | None, live: bool) -> ModelArm | None:
        if self.engine is None or state is None:
            return None
        return _model_arm(state, arm_name if live else None)

    def _treatment_error(self, endpoint: str, code: str) -> None:
        window = self.windows.arm(TREATMENT)
        window.requests += 1
        window.errors += 1
        self.metrics.errors.labels(TREATMENT, endpoint, code).inc()

    async def _answer(
        self,
        plan: Any,
        state: VersionState | None,
        arm: ModelArm | None,
        *,
        timeout: float | None = None,
    ) -> Outcome:
        """The model's answer within `timeout` (default: the deadline), else the fallback.
        Raises EngineLost when an isolated engine fails: its caller asks control instead."""
        if not plan.pending or arm is None or state is None:
            return self.hybrid.finish(plan, None, arm=arm, failure=NO_MODEL)
        if not state.ready:
            return self.hybrid.finish(plan, None, arm=arm, failure=UNAVAILABLE)
        budget = self.settings.deadline_s if timeout is None else timeout
        try:
            if budget <= 0:
                raise TimeoutError
            predictions, description = await self._predict(state, plan.queries, budget)
        except TimeoutError:
            return self.hybrid.finish(plan, None, arm=arm, failure=TIMEOUT)
        except EngineLost:
            raise
        except NotFound as exc:
            # The engine no longer holds the adapter (its replica was replaced): load it again.
            self.pool.forget(state, str(exc))
            self._apply(self.routing.snapshot)
            return self.hybrid.finish(plan, None, arm=arm, failure=UNAVAILABLE)
        except Exception as exc:
            if state.engine != MAIN_ENGINE:
                self.pool.lose(state.engine, exc)
                raise EngineLost(state.engine) from exc
            log.warning("engine failed (%s): fallback", type(exc).__name__)
            return self.hybrid.finish(plan, None, arm=arm, failure=UNAVAILABLE)
        return self.hybrid.finish(plan, predictions, arm=arm, description=description)

    async def _predict(
        self, state: VersionState, queries: list[MapperQuery], timeout: float
    ) -> tuple[list[Prediction], dict[str, Any]]:
        call = self.engines[state.engine].predict(state.adapter, queries)
        if state.engine == MAIN_ENGINE:
            return await asyncio.wait_for(call, timeout=timeout)
        # Serve holds a request to a dead deployment until a new replica is up (a minute for a
        # vLLM engine): once one request has found the isolated engine failing, the others stop
        # waiting and go to control.
        lost = self.pool.lost_signal(state.engine)
        task = asyncio.ensure_future(call)
        done, _ = await asyncio.wait(
            {task, lost}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            return task.result()
        task.cancel()
        if lost in done:
            raise EngineLost(state.engine)
        raise TimeoutError

    async def _shadow(self, plan: Any, control_labels: frozenset[str]) -> None:
        """Mirrors a control request to treatment; only the agreement is recorded."""
        rollout = self.rollout
        if rollout is None:
            return
        state = self.pool.state(
            self.settings.model,
            rollout.treatment_version,
            engine_for(TREATMENT, isolated=self.isolated),
        )
        if state is None or not state.ready:
            return
        arm = _model_arm(state, TREATMENT)
        try:
            outcome = await self._answer(plan, state, arm)
        except EngineLost:
            return  # nothing to compare; the treatment is marked failed and mirrors stop
        agree = frozenset(outcome.result["taxonomy"]) == control_labels
        window = self.windows.arm(TREATMENT)
        window.agreement_pairs += 1
        window.agreements += agree
        self.metrics.shadow.labels("agree" if agree else "disagree").inc()

    def _record(
        self, arm: str, endpoint: str, outcome: Outcome, latency: float, *, counted: bool
    ) -> None:
        metrics = self.metrics
        window = self.windows.arm(arm)
        window.requests += 1
        window.latencies_ms.append(latency * 1000)
        if counted:
            window.model_queries += outcome.model_queries
            window.schema_valid += outcome.schema_valid
            window.fallbacks += sum(
                n for reason, n in outcome.fallbacks.items() if reason != NO_MODEL
            )
            metrics.child(metrics.model_queries, arm).inc(outcome.model_queries)
            metrics.child(metrics.schema_valid, arm).inc(outcome.schema_valid)
        for reason, n in outcome.fallbacks.items():
            metrics.child(metrics.fallbacks, arm, reason).inc(n)
        for finding in outcome.result["findings"]:
            metrics.child(metrics.findings, arm, finding["method"]).inc()
        metrics.child(metrics.requests, arm, endpoint, "ok").inc()
        metrics.child(metrics.latency, arm, endpoint).observe(latency)
        metrics.update_rates(self.windows)

    def record_error(self, endpoint: str, code: str) -> None:
        self.metrics.errors.labels("none", endpoint, code).inc()
        self.metrics.requests.labels("none", endpoint, code).inc()

    async def map_batch(
        self, items: Sequence[Mapping[str, Any]], tenant: str | None, *, scope: str | None = None
    ) -> list[Mapped]:
        """All items are read first (one invalid item fails the batch, naming it), then mapped."""
        for index, item in enumerate(items):
            if len(item.get("request_id") or "") > _REQUEST_ID_MAX:
                raise InvalidArgument(
                    f"$.items[{index}].request_id: at most {_REQUEST_ID_MAX} characters"
                )
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
                        scope=scope,
                    )
                    for item in items
                )
            )
        )

    def feedback(
        self,
        request_id: str,
        *,
        labels: Sequence[str] | None,
        verdict: str | None,
        tenant: str | None = None,
    ) -> dict[str, Any]:
        def count(answered: Any, correct: bool) -> None:
            if answered.revision == self.windows.revision:
                window = self.windows.arm(answered.arm)
                window.feedback += 1
                window.feedback_correct += correct
            self.metrics.feedback.labels(answered.arm, "correct" if correct else "incorrect").inc()

        return self.feedback_log.record(
            request_id,
            tenant or "",
            labels=labels,
            verdict=verdict,
            taxonomy=self.hybrid.taxonomy,
            count=count,
        )

    # --- state for operators ---------------------------------------------------------------------

    def rollout_stats(self) -> dict[str, Any]:
        out = self.windows.as_dict()
        rollout = self.rollout
        if rollout is None:
            out["rollout"] = None
        else:
            # Never the salt: with it a caller could choose its own arm.
            view = {k: v for k, v in rollout.__dict__.items() if k != "salt"}
            view["lease_holds"] = rollout.lease_holds(time.time())
            out["rollout"] = view
        return out

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "engine": self.engine is not None,
            "registry": self.routing.health(),
            "champions": dict(self.champion),
            "adapters": {
                f"{s.model}-v{s.version}" + ("" if s.engine == MAIN_ENGINE else f"@{s.engine}"): (
                    s.status
                )
                for s in self.versions.values()
            },
            "analyst": self.analyst_health(),
            **({"stale_calibrations": stale} if (stale := self.pool.stale_calibrations()) else {}),
        }


def _model_arm(state: VersionState, arm: str | None) -> ModelArm:
    return ModelArm(
        state.model,
        state.version or None,
        state.temperature,
        arm,
        calibrator=state.calibrator,
        threshold=state.threshold,
    )


__all__ = ["EngineClient", "EngineLost", "Mapped", "RolloutSource", "RouterCore", "VersionState"]
