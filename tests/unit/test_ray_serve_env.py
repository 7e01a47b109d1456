"""The Ray images carry the Serve environment the code sets for a Ray of its own (one list)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from llama_mapper.platform.settings.serving import RAY_SERVE_ENV, ray_serve_env

DOCKER = Path(__file__).resolve().parents[2] / "deploy" / "docker"


def _env_of(dockerfile: Path) -> dict[str, str]:
    """NAME=value pairs of the Dockerfile's ENV instructions (continued lines joined)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text(encoding="utf-8"))
    pairs: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            pairs.update(re.findall(r"([A-Z_][A-Z0-9_]*)=(\S+)", line))
    return pairs


@pytest.mark.parametrize("image", ["ray-cpu.Dockerfile", "ray-gpu.Dockerfile"])
def test_every_ray_image_sets_the_serve_environment(image):
    env = _env_of(DOCKER / image)
    assert {name: env.get(name) for name in RAY_SERVE_ENV} == RAY_SERVE_ENV


def test_ray_serve_env_fills_in_without_overriding_an_operators_choice(monkeypatch):
    for name in RAY_SERVE_ENV:
        monkeypatch.delenv(name, raising=False)
    ray_serve_env()
    assert {name: os.environ[name] for name in RAY_SERVE_ENV} == RAY_SERVE_ENV
    for name in RAY_SERVE_ENV:
        monkeypatch.setenv(name, "0")  # an operator opting out keeps their value
    ray_serve_env()
    assert {os.environ[name] for name in RAY_SERVE_ENV} == {"0"}
