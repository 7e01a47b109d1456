"""Settings of the evaluation service and `mapperctl eval`: MAPPER_EVALUATION_<FIELD>."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from llama_mapper.inference.hybrid import DEFAULT_THRESHOLD
from llama_mapper.platform.settings.common import DEFAULT_PORTS, GrpcServiceSettings, common
from llama_mapper.platform.settings.registry import RegistryClientSettings


class EvaluationSettings(GrpcServiceSettings):
    """The evaluation server and CLI; every field is MAPPER_EVALUATION_<FIELD>.

    `token` unset falls back to the registry's token, so the local stack runs on one token (a
    caller holding that could write to the registry directly anyway)."""

    model_config = SettingsConfigDict(env_prefix="MAPPER_EVALUATION_", extra="ignore")

    port: int = Field(DEFAULT_PORTS["evaluation"], ge=0, le=65535, description="gRPC port.")
    address: str = Field(
        f"127.0.0.1:{DEFAULT_PORTS['evaluation']}",
        description="host:port mapperctl reaches the service at.",
    )
    ca_file: Path | None = Field(
        None, description="PEM CA bundle: mapperctl speaks TLS to the service and checks it."
    )
    reports_dir: Path = Field(
        Path(), description="One report directory per run; unset: <var dir>/evaluation/runs."
    )
    adapters_dir: Path = Field(
        Path(),
        description="Adapters downloaded from the registry (sha256-verified); unset: "
        "<var dir>/evaluation/adapters.",
    )
    registry_address: str | None = Field(
        None,
        description="host:port of the registry; unset: MAPPER_REGISTRY_ADDRESS or the local "
        "default. Model runs, compare and gate need it.",
    )
    registry_token: SecretStr | None = Field(
        None,
        description="Bearer token the service sends to the registry (recording metrics, "
        "temperatures and gate results); unset: MAPPER_REGISTRY_TOKEN.",
    )
    engine: Literal["auto", "vllm", "transformers"] = Field(
        "auto",
        description="Batch inference engine: vLLM offline (the serving engine code), transformers "
        "generate, or auto (vLLM when importable, else transformers).",
    )
    batch_size: int = Field(32, ge=1, description="Findings sent to the engine per call.")
    keep_engine: bool = Field(
        True,
        description="The server keeps its vLLM engine between runs (one start, about a minute on "
        "CPU; each version's adapter is added to it); false frees its memory after every run.",
    )
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
    threshold: float = Field(
        DEFAULT_THRESHOLD,
        ge=0,
        le=1,
        description="The hybrid's confidence threshold, as serving applies it "
        "(MAPPER_SERVING_THRESHOLD's default).",
    )
    stream_interval_s: float = Field(
        0.5, gt=0, description="Most frequent progress update StreamProgress sends."
    )

    @model_validator(mode="after")
    def _defaults_under_var_dir(self) -> EvaluationSettings:
        root = common().var_dir / "evaluation"
        if self.reports_dir == Path():
            self.reports_dir = root / "runs"
        if self.adapters_dir == Path():
            self.adapters_dir = root / "adapters"
        return self

    def registry(self) -> RegistryClientSettings:
        """The registry as this service reaches it: its own address and token, else the registry
        client's variables (MAPPER_REGISTRY_ADDRESS, MAPPER_REGISTRY_TOKEN, ...)."""
        client = RegistryClientSettings()
        update: dict[str, object] = {}
        if self.registry_address:
            update["address"] = self.registry_address
        if self.registry_token is not None and self.registry_token.get_secret_value():
            update["token"] = self.registry_token
        return client.model_copy(update=update)

    def registry_bearer(self) -> str | None:
        return self.registry().bearer()

    def bearer(self) -> str | None:
        """The token callers must present, and the one mapperctl sends: token, else the registry
        token. An empty value counts as unset: it must never match an empty `Bearer ` header."""
        return super().bearer() or self.registry_bearer()

    def caller_token(self) -> str | None:
        return self.bearer()
