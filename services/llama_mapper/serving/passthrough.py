"""What the router serves besides mapping: the analyst's assessment, OpenAI-style chat and the
model list. A mixin of RouterCore, which holds the engines, the adapter pool and the champions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llama_mapper.domain import rubric
from llama_mapper.domain.errors import NotFound, Unavailable
from llama_mapper.domain.prompt import ANALYST_MAX_TOKENS
from llama_mapper.inference.analyst import analyze_async
from llama_mapper.serving.arms import CONTROL, MAIN_ENGINE, TREATMENT


class Passthrough:
    # Provided by RouterCore.
    settings: Any
    engine: Any
    engines: dict[str, Any]
    pool: Any
    champion: Mapping[str, int]
    rollout: Any
    versions: dict[tuple[str, int, str], Any]

    def start(self) -> None:  # pragma: no cover - RouterCore's
        raise NotImplementedError

    def _adapter_for(self, model: str) -> Any:
        version = self.champion.get(model)
        state = self.pool.state(model, version) if version is not None else None
        if self.engine is None or state is None or not state.ready:
            raise Unavailable(f"no {model!r} adapter is loaded")
        return state

    async def analyze(
        self,
        framework: Any,
        finding: Any,
        context: Any = None,
        *,
        where: str = "$",
    ) -> dict[str, Any]:
        """The hybrid analyst (inference/analyst.py, as evaluated): risk and controls from the
        rubric, the remediation from the analyst adapter when one is loaded and answers in time,
        else from the rubric's catalogue. Bad input is INVALID_ARGUMENT naming the path."""
        self.start()
        q = rubric.query(framework, finding, context, where=where)
        try:
            state = self._adapter_for(self.settings.analyst_model)
        except Unavailable:
            state = None  # rules-only serving, or no analyst version yet: the catalogue answers
        complete = None
        if state is not None:
            engine, adapter = self.engines[state.engine], state.adapter

            async def complete(messages: list[dict[str, str]], json_schema: dict[str, Any]) -> str:
                answer = await engine.chat(
                    messages, adapter, max_tokens=ANALYST_MAX_TOKENS, json_schema=json_schema
                )
                return str(answer["text"])

        assessment = await analyze_async(q, complete, deadline_s=self.settings.analyst_deadline_s)
        by_model = assessment["methods"]["remediation"] == "model"
        return {
            "assessment": assessment,
            "provenance": {
                "adapter": state.model if state is not None and by_model else None,
                "adapter_version": (state.version or None)
                if state is not None and by_model
                else None,
            },
        }

    def analyst_health(self) -> dict[str, Any]:
        """The analyst's champion as /healthz shows it: which version, its adapter's load state,
        and what writes the remediation now (the model once the adapter is ready, else the
        rubric's catalogue; risk and controls always come from the rubric)."""
        model = self.settings.analyst_model
        version = self.champion.get(model)
        state = self.pool.state(model, version) if version is not None else None
        ready = self.engine is not None and state is not None and state.ready
        return {
            "model": model,
            "champion": version,
            "status": state.status if state is not None else "none",
            "remediation": "model" if ready else "catalogue",
            **({"error": state.error} if state is not None and state.error else {}),
        }

    def resolve_chat_model(self, name: str) -> Any:
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
        raise NotFound("that model is not served (see GET /v1/models)")

    async def chat(
        self, model: str, messages: list[dict[str, str]], *, max_tokens: int, temperature: float
    ) -> dict[str, Any]:
        self.start()
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

    def _roles(self, state: Any) -> list[str]:
        rollout = self.rollout
        in_rollout = bool(rollout and rollout.active and state.model == self.settings.model)
        roles = []
        if self.champion.get(state.model) == state.version:
            roles.append(self.settings.champion_alias)
        if in_rollout and rollout.control_version == state.version:
            roles.append(CONTROL)
        if in_rollout and rollout.treatment_version == state.version:
            roles.append(TREATMENT)
        return roles

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
                    "roles": self._roles(state),
                    "temperature": state.temperature,
                    **({"error": state.error} if state.error else {}),
                }
            )
        return out
