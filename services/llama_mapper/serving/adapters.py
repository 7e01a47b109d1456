"""The adapters the router has asked its engines to load: state per (model, version, engine),
loads in the background, and the probe that notices an isolated engine die."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from llama_mapper.domain import jsonio
from llama_mapper.domain.calibrators import calibrator_from_description, recipe_of
from llama_mapper.domain.errors import NotFound, Unavailable
from llama_mapper.inference.model import MapperQuery, Prediction
from llama_mapper.serving.arms import MAIN_ENGINE

log = logging.getLogger(__name__)

LOCAL_VERSION = 0  # adapters from local directories (no registry) serve as version 0
FAILED_RETRY_S = 30.0


class EngineClient(Protocol):
    """What the router needs from an engine deployment."""

    async def predict(
        self, adapter: str, queries: list[MapperQuery]
    ) -> tuple[list[Prediction], dict[str, Any]]: ...

    async def chat(
        self, messages: list[dict[str, str]], adapter: str | None, **kw: Any
    ) -> dict[str, Any]: ...

    async def load_version(self, model: str, version: int) -> dict[str, Any]: ...

    async def load_local(self, model: str, path: str) -> dict[str, Any]: ...

    async def adapters(self) -> list[dict[str, Any]]: ...


@dataclass
class VersionState:
    model: str
    version: int
    engine: str = MAIN_ENGINE  # the engine that holds it: MAIN_ENGINE or TREATMENT_ENGINE
    status: str = "loading"  # loading | ready | failed
    engine_lost: bool = False  # failed because its (isolated) engine died or errored
    adapter: str = ""
    temperature: float = 1.0
    calibrator: Any = None  # calibrators.Calibrator from the version's evaluation
    threshold: float | None = None
    # Why the version's recorded calibration is not applied (fitted under another recipe), or "".
    stale_calibration: str = ""
    error: str = ""
    since: float = 0.0

    @property
    def ready(self) -> bool:
        return self.status == "ready"


class AdapterPool:
    """Loads what routing needs, once per (model, version, engine); a failed load is retried after
    FAILED_RETRY_S. The version's calibration is read from the registry with each load (off the
    request path) and applied when it was fitted under `recipe`, the way this router's hybrid
    asks the model (HybridMapper.recipe); one fitted under another recipe (or before recipes were
    recorded) is not applied: the version answers with temperature 1 and the router's threshold,
    its health says why, until its evaluation is run again."""

    def __init__(
        self,
        engines: dict[str, EngineClient],
        *,
        local_adapters: dict[str, Any],
        calibration: Callable[[str, int], Awaitable[tuple[float, str, float | None]]] | None,
        spawn: Callable[[Any], None],
        recipe: str | None = None,
    ) -> None:
        self.engines = engines
        self.local_adapters = local_adapters
        self.calibration = calibration
        self.recipe = recipe
        self.spawn = spawn
        self.versions: dict[tuple[str, int, str], VersionState] = {}
        # Resolved when an engine is found failing: requests still waiting on it give up at once.
        self.lost: dict[str, asyncio.Future[None]] = {}

    def ensure_loaded(self, model: str, version: int, engine: str = MAIN_ENGINE) -> None:
        if engine not in self.engines or (version <= 0 and model not in self.local_adapters):
            return
        state = self.versions.get((model, version, engine))
        if state is not None and (
            state.status != "failed" or time.monotonic() - state.since < FAILED_RETRY_S
        ):
            return
        state = VersionState(model, version, engine, since=time.monotonic())
        self.versions[(model, version, engine)] = state
        self.spawn(self._load(state))

    async def _load(self, state: VersionState) -> None:
        engine = self.engines[state.engine]
        try:
            if state.version == LOCAL_VERSION:
                info = await engine.load_local(state.model, str(self.local_adapters[state.model]))
            else:
                info = await engine.load_version(state.model, state.version)
                if self.calibration is not None:
                    self._calibrate(state, *await self.calibration(state.model, state.version))
            state.adapter = info["name"]
            state.status = "ready"
            log.info("%s v%s ready as adapter %s", state.model, state.version, state.adapter)
        except Exception as exc:
            state.status, state.error, state.since = "failed", str(exc), time.monotonic()
            log.error("%s v%s failed to load: %s", state.model, state.version, exc)

    def _calibrate(
        self, state: VersionState, temperature: float, calibrator: str, threshold: float | None
    ) -> None:
        description = jsonio.loads(calibrator, what="calibrator_json") if calibrator else {}
        if not (description or threshold is not None or temperature != 1.0):
            return  # nothing recorded (an analyst, a version never evaluated): the defaults
        recipe = recipe_of(description)
        if self.recipe is not None and recipe != self.recipe:
            state.stale_calibration = (
                f"calibration fitted under recipe {recipe!r}, this router asks {self.recipe!r}: "
                f"not applied; run `mapperctl eval run --hybrid` for v{state.version} again"
            )
            log.warning("%s v%s: %s", state.model, state.version, state.stale_calibration)
            return
        state.temperature, state.threshold = temperature, threshold
        if description:
            state.calibrator = calibrator_from_description(description)

    def forget(self, state: VersionState, reason: str) -> None:
        """The engine no longer holds it (a replacement replica starts empty): load it again at once."""
        state.status, state.error, state.since = "failed", reason[:500], 0.0

    def stale_calibrations(self) -> dict[str, str]:
        """`model-vN` -> why its recorded calibration is not applied, for the versions loaded."""
        return {
            f"{s.model}-v{s.version}": s.stale_calibration
            for s in self.versions.values()
            if s.stale_calibration
        }

    def state(self, model: str, version: int, engine: str = MAIN_ENGINE) -> VersionState | None:
        """The version on `engine`, or wherever else it is ready (after a promotion the treatment's
        engine keeps answering for the new champion until the main engine has loaded it)."""
        state = self.versions.get((model, version, engine))
        if state is not None and state.ready:
            return state
        for (m, v, _), other in sorted(self.versions.items()):
            if (m, v) == (model, version) and other.ready:
                return other
        return state

    async def watch(
        self, engine: str, active: Callable[[], bool], every_s: float, timeout_s: float
    ) -> None:
        """Probes an isolated engine while it holds a ready adapter. Serve holds requests to a dead
        replica until a replacement is up (a minute for vLLM on CPU), so without the probe a dead
        engine that had nothing in flight would go unnoticed until its requests time out."""
        client = self.engines[engine]
        while True:
            await asyncio.sleep(every_s)
            held = {s.adapter for s in self.versions.values() if s.engine == engine and s.ready}
            if not held or not active():
                continue
            try:
                listed = await asyncio.wait_for(client.adapters(), timeout=timeout_s)
                missing = held - {adapter["name"] for adapter in listed}
                if missing:  # a replacement replica starts empty
                    raise NotFound(f"adapters {sorted(missing)} are no longer loaded")
            except TimeoutError:
                self.lose(engine, Unavailable(f"no answer to a probe within {timeout_s:g}s"))
            except Exception as exc:
                self.lose(engine, exc)

    def lose(self, engine: str, exc: BaseException) -> None:
        """An isolated engine failed: what it holds counts as failed (reloaded after
        FAILED_RETRY_S), and requests waiting on it stop waiting."""
        reason = f"engine {engine!r} failed: {type(exc).__name__}: {exc}"[:500]
        for state in self.versions.values():
            if state.engine == engine and state.status != "failed":
                state.status, state.error, state.since = "failed", reason, time.monotonic()
                state.engine_lost = True
                log.error("%s v%s lost with its engine: %s", state.model, state.version, reason)
        lost = self.lost.pop(engine, None)
        if lost is not None and not lost.done():
            lost.set_result(None)

    def lost_signal(self, engine: str) -> asyncio.Future[None]:
        lost = self.lost.get(engine)
        if lost is None or lost.done():
            lost = self.lost[engine] = asyncio.get_running_loop().create_future()
        return lost
