"""The router's logic without Ray or HTTP: A/B arm, hybrid mapping, stats, feedback, shadowing.

`RouterCore` is driven by the Serve deployment (router.py) and by tests directly. It talks to the
model through `EngineClient` (the engine deployment's handle, or anything with the same methods),
optionally a second one that serves only the rollout's treatment, and learns the rollout from
`RolloutSource` (the registry). Nothing here fails a request because the model is unavailable:
control's model or the hybrid mapper's fallback answers instead, and the arm's statistics record
it so the canary controller can roll back.
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

from llama_mapper.domain.errors import InvalidArgument, NotFound, Unavailable
from llama_mapper.domain.prompt import ANALYST_MAX_TOKENS, analyst_messages
from llama_mapper.domain.schemas import load_schema, validate
from llama_mapper.inference.hybrid import (
    INVALID,
    NO_MODEL,
    TIMEOUT,
    UNAVAILABLE,
    HybridMapper,
    ModelArm,
    Outcome,
)
from llama_mapper.inference.model import MapperQuery, Prediction
from llama_mapper.platform.settings.serving import ServingSettings
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
from llama_mapper.serving.ratelimit import RateLimiter
from llama_mapper.serving.stats import RolloutWindows, ServingMetrics

log = logging.getLogger(__name__)

LOCAL_VERSION = 0  # adapters from local directories (no registry) serve as version 0
_FAILED_RETRY_S = 30.0
# The result schema bounds the request id it echoes: one too long (an X-Request-Id header, a gRPC
# request_id) is the caller's bad input, refused before any work, not a result failing validation.
_REQUEST_ID_MAX = load_schema("mapper-output")["properties"]["provenance"]["properties"][
    "request_id"
]["maxLength"]


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
    engine: str = MAIN_ENGINE  # the engine that holds it: MAIN_ENGINE or TREATMENT_ENGINE
    status: str = "loading"  # loading | ready | failed
    engine_lost: bool = False  # failed because its (isolated) engine died or errored
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


class EngineLost(Exception):
    """The treatment's own engine failed a request: control answers it instead."""


class RouterCore:
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
        # With a treatment engine the rollout's treatment is isolated on it (routing.engine_for).
        self.engines: dict[str, EngineClient] = {
            role: client
            for role, client in ((MAIN_ENGINE, engine), (TREATMENT_ENGINE, treatment_engine))
            if client is not None and engine is not None
        }
        self.isolated = TREATMENT_ENGINE in self.engines
        self.source = source
        self.hybrid = HybridMapper(threshold=settings.threshold, deadline_s=settings.deadline_s)
        self.metrics = metrics or ServingMetrics()
        self.limiter = RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst)
        self.tokens = settings.token_table()
        self.windows = RolloutWindows()
        self.rollout: RolloutView | None = None
        self.champion: dict[str, int] = {}
        self.versions: dict[tuple[str, int, str], VersionState] = {}
        self._answers: OrderedDict[str, tuple[str, frozenset[str], int]] = OrderedDict()
        self._refreshed_at = float("-inf")
        self._refresh_lock = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()
        # Resolved when an engine is found failing: requests still waiting on it give up at once.
        self._lost: dict[str, asyncio.Future[None]] = {}
        self._watching = False

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
            if self.isolated and not self._watching:
                self._watching = True
                self._spawn(self._watch(TREATMENT_ENGINE))
            wanted = placements(
                self.rollout, self.champion, self.settings.model, isolated=self.isolated
            )
            for model, version, engine in sorted(wanted):
                self._ensure_loaded(model, version, engine)

    def _set_rollout(self, rollout: RolloutView | None) -> None:
        self.rollout = rollout
        self.windows.for_revision(rollout.revision if rollout else 0)
        self.metrics.treatment_weight.set(
            rollout.treatment_weight if rollout and rollout.active else 0.0
        )

    def _ensure_loaded(self, model: str, version: int, engine: str = MAIN_ENGINE) -> None:
        if engine not in self.engines or (
            version <= 0 and model not in self.settings.local_adapters
        ):
            return
        state = self.versions.get((model, version, engine))
        if state is not None and (
            state.status != "failed" or time.monotonic() - state.since < _FAILED_RETRY_S
        ):
            return
        state = VersionState(model, version, engine, since=time.monotonic())
        self.versions[(model, version, engine)] = state
        self._spawn(self._load(state))

    async def _load(self, state: VersionState) -> None:
        engine = self.engines[state.engine]
        try:
            if state.version == LOCAL_VERSION:
                info = await engine.load_local(
                    state.model, str(self.settings.local_adapters[state.model])
                )
            else:
                info = await engine.load_version(state.model, state.version)
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

    def _state(self, model: str, version: int, engine: str = MAIN_ENGINE) -> VersionState | None:
        """The version on `engine`, or wherever else it is ready (after a promotion the treatment's
        engine keeps answering for the new champion until the main engine has loaded it)."""
        state = self.versions.get((model, version, engine))
        if state is not None and state.ready:
            return state
        for (m, v, _), other in sorted(self.versions.items()):
            if (m, v) == (model, version) and other.ready:
                return other
        return state

    async def _watch(self, engine: str) -> None:
        """Probes an isolated engine while it holds a ready adapter. Serve holds requests to a dead
        replica until a replacement is up (a minute for vLLM on CPU), so without the probe a dead
        engine that had nothing in flight would go unnoticed until its requests time out."""
        client = self.engines[engine]
        while True:
            await asyncio.sleep(self.settings.treatment_probe_s)
            held = {s.adapter for s in self.versions.values() if s.engine == engine and s.ready}
            if not held or self.rollout is None or not self.rollout.active:
                continue
            timeout = self.settings.treatment_probe_timeout_s
            try:
                listed = await asyncio.wait_for(client.adapters(), timeout=timeout)
                missing = held - {adapter["name"] for adapter in listed}
                if missing:  # a replacement replica starts empty
                    raise NotFound(f"adapters {sorted(missing)} are no longer loaded")
            except TimeoutError:
                self._lose(engine, Unavailable(f"no answer to a probe within {timeout:g}s"))
            except Exception as exc:
                self._lose(engine, exc)

    def _lose(self, engine: str, exc: BaseException) -> None:
        """An isolated engine failed: what it holds counts as failed (reloaded after
        _FAILED_RETRY_S), and requests waiting on it stop waiting."""
        reason = f"engine {engine!r} failed: {type(exc).__name__}: {exc}"[:500]
        for state in self.versions.values():
            if state.engine == engine and state.status != "failed":
                state.status, state.error, state.since = "failed", reason, time.monotonic()
                state.engine_lost = True
                log.error("%s v%s lost with its engine: %s", state.model, state.version, reason)
        lost = self._lost.pop(engine, None)
        if lost is not None and not lost.done():
            lost.set_result(None)

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
        if len(request_id) > _REQUEST_ID_MAX:
            raise InvalidArgument(f"request id: at most {_REQUEST_ID_MAX} characters")
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
        state = self._state(model, version, engine_for(arm_name, isolated=self.isolated))
        if plan.pending and assignment.arm == TREATMENT and not (state and state.ready):
            # Treatment cannot answer (still loading, or its artifact or its engine failed):
            # control answers the client; a failed treatment counts as an error on its arm so the
            # canary rolls back.
            if state is not None and state.status == "failed":
                lost = state.engine_lost
                self._treatment_error(endpoint, "engine_unavailable" if lost else "adapter_failed")
            arm_name, version = CONTROL, self.rollout.control_version if self.rollout else 0
            state = self._state(model, version)

        arm = self._arm(arm_name, state, active)
        asked = time.perf_counter()
        try:
            outcome = await self._answer(plan, state, arm)
        except EngineLost:
            # The treatment's own engine died or errored on this request: control answers it
            # within what is left of the deadline, and the treatment is charged with an error.
            self._treatment_error(endpoint, "engine_unavailable")
            arm_name, version = CONTROL, self.rollout.control_version if self.rollout else 0
            state = self._state(model, version)
            arm = self._arm(arm_name, state, active)
            left = self.settings.deadline_s - (time.perf_counter() - asked)
            outcome = await self._answer(plan, state, arm, timeout=left)

        latency = time.perf_counter() - started
        self._record(arm_name, endpoint, outcome, latency, counted=arm is not None)
        labels = frozenset(outcome.result["taxonomy"])
        self._remember(request_id, arm_name, labels)
        if assignment.mirror and plan.pending and arm_name == CONTROL and active:
            self._spawn(self._shadow(plan, labels))
        if active:
            outcome.result["provenance"]["router_arm"] = arm_name
        return Mapped(outcome.result, arm_name if active else None, version)

    def _arm(self, arm_name: str, state: VersionState | None, active: bool) -> ModelArm | None:
        if self.engine is None or state is None:
            return None
        version = state.version or None
        return ModelArm(state.model, version, state.temperature, arm_name if active else None)

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
        except Exception as exc:
            if state.engine != MAIN_ENGINE:
                self._lose(state.engine, exc)
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
        lost = self._lost.get(state.engine)
        if lost is None or lost.done():
            lost = self._lost[state.engine] = asyncio.get_running_loop().create_future()
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
        assert self.rollout is not None
        state = self._state(
            self.settings.model,
            self.rollout.treatment_version,
            engine_for(TREATMENT, isolated=self.isolated),
        )
        if state is None or not state.ready:
            return
        arm = ModelArm(self.settings.model, state.version, state.temperature, TREATMENT)
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
        schema = load_schema("analyst-output")
        answer = await asyncio.wait_for(
            self.engines[state.engine].chat(
                analyst_messages(framework, finding),
                state.adapter,
                max_tokens=ANALYST_MAX_TOKENS,
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

    def resolve_chat_model(self, name: str) -> VersionState | None:
        """OpenAI `model`: a registry model name (its champion), `<model>-v<N>`, or the base id
        (None: the main engine's base model). The main engine's copy is preferred."""
        ordered = sorted(self.versions.values(), key=lambda s: s.engine != MAIN_ENGINE)
        for state in ordered:
            if state.ready and name in (state.adapter, f"{state.model}-v{state.version}"):
                return state
        if name in self.champion:
            return self._adapter_for(name)
        if name == self.settings.engine.base_model:
            return None
        raise NotFound(f"model {name!r} is not served (see GET /v1/models)")

    async def chat(
        self, model: str, messages: list[dict[str, str]], *, max_tokens: int, temperature: float
    ) -> dict[str, Any]:
        await self.refresh()
        if self.engine is None:
            raise Unavailable("the engine is not deployed (rules-only serving)")
        state = self.resolve_chat_model(model)
        engine = self.engines[state.engine] if state is not None else self.engine
        return await engine.chat(
            messages,
            state.adapter if state is not None else None,
            max_tokens=max_tokens,
            temperature=temperature,
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
        for state in sorted(self.versions.values(), key=lambda s: (s.model, s.version, s.engine)):
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
                    "engine": state.engine,
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
            "adapters": {
                f"{s.model}-v{s.version}" + ("" if s.engine == MAIN_ENGINE else f"@{s.engine}"): (
                    s.status
                )
                for s in self.versions.values()
            },
        }


__all__ = [
    "INVALID",
    "EngineClient",
    "EngineLost",
    "Mapped",
    "RolloutSource",
    "RouterCore",
    "VersionState",
]
