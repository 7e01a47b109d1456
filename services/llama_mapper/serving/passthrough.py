"""What the router serves besides mapping: the analyst's assessment, OpenAI-style chat and the
model list. A mixin of RouterCore, which holds the engines, the adapter pool and the champions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from llama_mapper.domain.errors import InvalidArgument, NotFound, Unavailable
from llama_mapper.domain.prompt import ANALYST_MAX_TOKENS, analyst_messages
from llama_mapper.domain.schemas import load_schema, validate
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

    async def analyze(self, framework: str, finding: Mapping[str, Any]) -> dict[str, Any]:
        self.start()
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
