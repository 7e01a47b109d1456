"""Settings of training jobs that are not in their YAML config: fault injection for the tests."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TrainingFaults(BaseSettings):
    """MAPPER_TEST_<FIELD>: the killed-worker test makes worker rank 1 exit once at a step."""

    model_config = SettingsConfigDict(env_prefix="MAPPER_TEST_", extra="ignore")

    crash_at_step: int | None = Field(None, description="Step at which worker rank 1 exits once.")
    crash_marker: Path | None = Field(
        None, description="File written when it did, so the retried attempt does not exit again."
    )
