"""A version's recorded calibration is applied only under the recipe it was fitted under."""

from __future__ import annotations

import asyncio
import json

import pytest

from llama_mapper.inference.hybrid import ALL_LABELS_RECIPE, HybridMapper
from llama_mapper.serving.adapters import AdapterPool
from llama_mapper.serving.arms import MAIN_ENGINE

HISTOGRAM = {"kind": "histogram", "edges": [0.5], "values": [0.2, 0.9], "counts": [10, 10]}


class _Engine:
    async def load_version(self, model, version):
        return {"name": f"{model}-v{version}"}


def _load(recorded: tuple[float, str, float | None], recipe: str | None):
    async def calibration(model, version):
        return recorded

    async def go():
        tasks = []
        pool = AdapterPool(
            {MAIN_ENGINE: _Engine()},
            local_adapters={},
            calibration=calibration,
            spawn=lambda coro: tasks.append(asyncio.ensure_future(coro)),
            recipe=recipe,
        )
        pool.ensure_loaded("mapper", 3)
        await asyncio.gather(*tasks)
        return pool, pool.state("mapper", 3)

    return asyncio.run(go())


def test_a_calibration_fitted_under_the_routers_recipe_is_applied():
    recipe = HybridMapper().recipe
    pool, state = _load((1.7, json.dumps({**HISTOGRAM, "recipe": recipe}), 0.85), recipe)
    assert state.ready and not state.stale_calibration
    assert (state.temperature, state.threshold) == (1.7, 0.85)
    assert state.calibrator(0.3) == 0.2 and state.calibrator(0.7) == 0.9
    assert pool.stale_calibrations() == {}


@pytest.mark.parametrize(
    "description",
    [
        {**HISTOGRAM, "recipe": ALL_LABELS_RECIPE},  # fitted on confidences over all labels
        HISTOGRAM,  # recorded before recipes were: fitted before the shortlist
        {"kind": "temperature", "temperature": 2.0},
    ],
)
def test_a_calibration_fitted_under_another_recipe_is_not_applied_and_health_says_why(
    description,
):
    pool, state = _load((1.7, json.dumps(description), 0.85), HybridMapper().recipe)
    assert state.ready  # the version still serves, with the defaults
    assert (state.temperature, state.calibrator, state.threshold) == (1.0, None, None)
    (reason,) = pool.stale_calibrations().values()
    assert "shortlist/1" in reason and "mapperctl eval run --hybrid" in reason
    assert list(pool.stale_calibrations()) == ["mapper-v3"]


def test_a_temperature_and_threshold_without_a_calibrator_are_stale_too():
    pool, state = _load((1.4, "", 0.8), HybridMapper().recipe)
    assert (state.temperature, state.threshold) == (1.0, None)
    assert "'unrecorded'" in pool.stale_calibrations()["mapper-v3"]


def test_nothing_recorded_is_nothing_stale():
    pool, state = _load((1.0, "", None), HybridMapper().recipe)
    assert state.ready and pool.stale_calibrations() == {}


def test_a_pool_without_a_recipe_applies_what_was_recorded():
    _, state = _load((1.7, json.dumps(HISTOGRAM), 0.85), None)
    assert (state.temperature, state.threshold) == (1.7, 0.85) and state.calibrator is not None
