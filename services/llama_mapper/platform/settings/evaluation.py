"""Every setting of the evaluation service, read from MAPPER_EVALUATION_* environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_ROOT = Path(os.environ.get("MAPPER_VAR_DIR", "var")) / "evaluation"
# The registry's own variable: the token `make up` hands every service (see cli/stack.py).
REGISTRY_TOKEN_ENV = "MAPPER_REGISTRY_TOKEN"  # noqa: S105 - a variable name, not a secret


class EvaluationSettings(BaseSettings):
    """Configuration of the evaluation server and CLI; every field is MAPPER_EVALUATION_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix="MAPPER_EVALUATION_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the gRPC server binds to.")
    port: int = Field(50053, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    reports_dir: Path = Field(
        DEFAULT_ROOT / "runs", description="One report directory per run is written under here."
    )
    adapters_dir: Path = Field(
        DEFAULT_ROOT / "adapters",
        description="Adapters downloaded from the registry (sha256-verified) are cached here.",
    )
    registry_address: str | None = Field(
        None,
        description="host:port of the registry; unset: MAPPER_REGISTRY_ADDRESS or the local default. "
        "Model runs, compare and gate need it.",
    )
    registry_token: SecretStr | None = Field(
        None,
        description="Bearer token the service sends to the registry (recording metrics, "
        "temperatures and gate results); unset: MAPPER_REGISTRY_TOKEN.",
    )
    token: SecretStr | None = Field(
        None,
        description="Bearer token callers must send with StartEvaluation and CheckGate (and with "
        "reads when require_auth_for_reads); unset: the registry token above, so the local stack "
        "runs on one token.",
    )
    allow_insecure_writes: bool = Field(
        False,
        description="Local development only: start without any token (neither this one nor the "
        "registry's) and accept every call unauthenticated.",
    )
    require_auth_for_reads: bool = Field(
        False, description="StreamProgress, GetReport and CompareVersions need the token too."
    )
    engine: Literal["auto", "vllm", "transformers"] = Field(
        "auto",
        description="Batch inference engine: vLLM offline (the serving engine code), transformers "
        "generate, or auto (vLLM when importable, else transformers).",
    )
    batch_size: int = Field(32, ge=1, description="Findings sent to the engine per call.")
    hardware_profile: str = Field(
        "cpu-2core", description="Hardware profile latency figures are recorded under by default."
    )
    default_eval_set: str | None = Field(
        None, description="Eval set used when a request names none; unset: the bundled golden set."
    )
    default_held_out_set: str | None = Field(
        None,
        description="Held-out set used when a request names none (a built mapper-heldout.jsonl).",
    )
    default_calibration_set: str | None = Field(
        None,
        description="Calibration split used when a request names none (a built mapper-eval.jsonl).",
    )
    robustness_per_perturbation: int = Field(
        50, ge=1, description="Outputs per perturbation in the robustness suite."
    )
    max_queued_runs: int = Field(8, ge=1, description="Runs accepted while one is running.")
    stream_interval_s: float = Field(
        0.5, gt=0, description="Most frequent progress update StreamProgress sends."
    )

    def registry_bearer(self) -> str | None:
        """The token the service sends to the registry: registry_token, else MAPPER_REGISTRY_TOKEN."""
        if self.registry_token is not None and self.registry_token.get_secret_value():
            return self.registry_token.get_secret_value()
        return os.environ.get(REGISTRY_TOKEN_ENV) or None

    def caller_token(self) -> str | None:
        """The token callers must present, and the one mapperctl sends: token, else the registry
        token (a caller holding that could write to the registry directly anyway). An empty value
        counts as unset: it must never match an empty `Bearer ` header."""
        if self.token is not None and self.token.get_secret_value():
            return self.token.get_secret_value()
        return self.registry_bearer()
