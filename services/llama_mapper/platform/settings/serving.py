"""Configuration of the serving app; every field is MAPPER_SERVING_<FIELD> (nested: __)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from llama_mapper.inference.hybrid import DEFAULT_THRESHOLD
from llama_mapper.inference.vllm_engine import VllmEngineConfig
from llama_mapper.platform.auth import TokenTable
from llama_mapper.platform.settings.common import DEFAULT_PORTS, common

# Ray Serve reads these when its proxy and replicas start, so they belong to the Ray processes,
# not to this class: the Ray images set them (deploy/docker/ray-*.Dockerfile, checked by
# tests/unit/test_ray_serve_env.py), `mapperctl stack up` starts its Ray head with them, and
# ray_serve_env() sets them before this code starts a Ray of its own.
# RAY_SERVE_PROXY_USE_GRPC: the HTTP proxy hands requests to the replicas over gRPC instead of Ray
# actor calls: a rules-only answer one at a time through the proxy and the router 7.7 ms p95
# instead of 9.6-9.9 with the engine up (bench/rules_floor.py --engine, docs/BENCHMARKS.md).
RAY_SERVE_ENV: dict[str, str] = {"RAY_SERVE_PROXY_USE_GRPC": "1"}


def ray_serve_env() -> None:
    """Sets RAY_SERVE_ENV in this process (where not set already) before it starts a Ray that will
    host Serve: a local Ray's processes inherit the driver's environment. A Ray already running
    keeps the environment it was started with."""
    for name, value in RAY_SERVE_ENV.items():
        os.environ.setdefault(name, value)


class ServingSettings(BaseSettings):
    """The router, the engine deployment and the canary controller read this one class."""

    model_config = SettingsConfigDict(
        env_prefix="MAPPER_SERVING_", env_nested_delimiter="__", extra="ignore"
    )

    http_host: str = Field("127.0.0.1", description="Address Serve's HTTP proxy binds to.")
    http_port: int = Field(
        DEFAULT_PORTS["serving_http"], ge=0, le=65535, description="Serve HTTP port."
    )
    grpc_port: int = Field(
        DEFAULT_PORTS["serving_grpc"],
        ge=0,
        le=65535,
        description="Serve gRPC ingress port (MapperService); 0 disables it.",
    )
    app_name: str = Field("llama-mapper", description="Serve application name.")
    model: str = Field("mapper", description="Registry model name of the mapper adapters.")
    analyst_model: str = Field("analyst", description="Registry model name of the analyst.")
    champion_alias: str = Field("champion", description="Alias serving when no rollout is active.")
    # The registry client's own variables work too: pods and the local stack set those for
    # every component (the serving-specific name wins when both are set).
    registry_address: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "registry_address", "MAPPER_SERVING_REGISTRY_ADDRESS", "MAPPER_REGISTRY_ADDRESS"
        ),
        description="host:port of the registry (MAPPER_SERVING_REGISTRY_ADDRESS, else "
        "MAPPER_REGISTRY_ADDRESS). Unset: no registry; adapters come from local_adapters and no "
        "rollout runs.",
    )
    registry_token: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices(
            "registry_token", "MAPPER_SERVING_REGISTRY_TOKEN", "MAPPER_REGISTRY_TOKEN"
        ),
        description="Registry bearer token (MAPPER_SERVING_REGISTRY_TOKEN, else "
        "MAPPER_REGISTRY_TOKEN).",
    )
    registry_ca_file: Path | None = Field(
        None,
        validation_alias=AliasChoices(
            "registry_ca_file", "MAPPER_SERVING_REGISTRY_CA_FILE", "MAPPER_REGISTRY_CA_FILE"
        ),
        description="PEM CA bundle of the registry's TLS certificate (MAPPER_SERVING_REGISTRY_CA_FILE, "
        "else MAPPER_REGISTRY_CA_FILE); unset: plaintext.",
    )
    registry_timeout_s: float = Field(
        2.0,
        gt=0,
        description="Deadline of each registry read of the routing state; a slower registry "
        "leaves the last-known-good state in place.",
    )
    local_adapters: dict[str, Path] = Field(
        default_factory=dict,
        description="Without a registry: model name -> adapter directory, e.g. "
        '{"mapper": "/models/mapper-v1", "analyst": "/models/analyst-v1"}.',
    )
    adapter_cache_dir: Path | None = Field(
        None,
        description="Where registry versions are downloaded (sha256-verified) before loading; "
        "unset: <cache dir>/adapters.",
    )
    engine_enabled: bool = Field(
        True, description="Deploy the vLLM engine; false serves rules + fallback only."
    )
    external_engine_url: str | None = Field(
        None,
        description="Use an OpenAI-compatible server (`vllm serve` / TGI from a `mapperctl export` "
        "bundle) instead of the in-cluster engine; served model names are <model>-v<N>.",
    )
    external_engine_flavor: str = Field(
        "vllm", description="'vllm' (structured-output choice) or 'tgi' (validation only)."
    )
    engine: VllmEngineConfig = Field(
        default_factory=VllmEngineConfig,
        description="vLLM engine (MAPPER_SERVING_ENGINE__<FIELD>).",
    )
    engine_num_cpus: float = Field(1.0, description="Ray CPUs reserved by the engine replica.")
    engine_num_gpus: float | None = Field(
        None,
        ge=0,
        description="Ray GPUs reserved by the engine replica; unset: 1 when "
        "engine.device_profile is 'gpu' (Ray hides every GPU from an actor that reserves none, "
        "so vLLM would find no CUDA device), else 0.",
    )
    isolate_treatment: bool = Field(
        False,
        description="Serve a rollout's treatment from an engine deployment of its own "
        "(MapperEngineTreatment): when it dies or errors, control answers its requests and the "
        "canary rolls it back. Costs a second vLLM engine (cores, memory): off by default on CPU.",
    )
    treatment_engine_num_cpus: float = Field(
        1.0, description="Ray CPUs reserved by the treatment engine replica (isolate_treatment)."
    )
    treatment_engine_num_gpus: float | None = Field(
        None,
        ge=0,
        description="Ray GPUs reserved by the treatment engine replica; unset: as engine_num_gpus "
        "decides for the treatment's device profile.",
    )
    treatment_probe_s: float = Field(
        1.0,
        gt=0,
        description="How often the router probes the treatment engine during a rollout "
        "(isolate_treatment). Serve holds requests to a dead replica until its replacement is up: "
        "the probe is what notices.",
    )
    treatment_probe_timeout_s: float = Field(
        5.0,
        gt=0,
        description="A probe unanswered this long (or a loaded adapter missing from its answer) "
        "marks the treatment engine lost: its requests go to control.",
    )
    treatment_engine_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Engine fields that differ on the treatment engine, e.g. "
        '{"omp_threads_bind": "1", "kv_cache_space_gib": 1} to give it a core of its own.',
    )
    threshold: float = Field(
        DEFAULT_THRESHOLD,
        ge=0,
        le=1,
        description="Below this calibrated confidence a model label -> other.unknown.",
    )
    deadline_s: float = Field(
        2.0, gt=0, description="Per-request budget for the model; past it the fallback answers."
    )
    analyst_deadline_s: float = Field(
        10.0,
        gt=0,
        description="Budget for the analyst's remediation; past it the rubric's catalogue answers.",
    )
    max_body_bytes: int = Field(65_536, ge=1, description="Larger request bodies get 413.")
    max_batch_items: int = Field(100, ge=1, description="Most items in /v1/map/batch.")
    rate_limit_rps: float = Field(
        50.0, ge=0, description="Sustained requests/s per tenant; 0 disables the limit."
    )
    rate_limit_burst: float = Field(100.0, ge=1, description="Requests a tenant may burst.")
    auth_token: SecretStr | None = Field(
        None, description="When set, /v1/* (and gRPC Map) need `Authorization: Bearer <token>`."
    )
    auth_tokens_file: Path | None = Field(
        None,
        description="More principals for the router (platform/auth.py's tokens file format).",
    )
    rollout_refresh_s: float = Field(
        2.0,
        gt=0,
        description="How often the router re-reads the rollout and champions, in the background.",
    )
    hardware_profile: str = Field("cpu-2core", description="Registry targets profile for gates.")
    feedback_memory: int = Field(
        100_000, ge=1, description="Recent request ids remembered for /v1/feedback."
    )

    @model_validator(mode="after")
    def _treatment_overrides_are_engine_fields(self) -> ServingSettings:
        if self.adapter_cache_dir is None:
            self.adapter_cache_dir = common().cache_dir / "adapters"
        if self.engine.cache_dir is None:
            self.engine = self.engine.model_copy(update={"cache_dir": common().cache_dir})
        unknown = sorted(set(self.treatment_engine_overrides) - set(VllmEngineConfig.model_fields))
        if unknown:
            raise ValueError(
                f"treatment_engine_overrides: {unknown} are not engine fields "
                f"(MAPPER_SERVING_ENGINE__<FIELD>: {sorted(VllmEngineConfig.model_fields)})"
            )
        self.treatment_engine_settings()  # a value of the wrong type fails here, named
        return self

    @property
    def treatment_engine_deployed(self) -> bool:
        """A second in-cluster engine serves the treatment (never with an external engine)."""
        return self.isolate_treatment and self.engine_enabled and not self.external_engine_url

    def treatment_engine_settings(self) -> ServingSettings:
        """These settings with the treatment engine's overrides applied to `engine`."""
        try:
            engine = VllmEngineConfig.model_validate(
                {**self.engine.model_dump(), **self.treatment_engine_overrides}
            )
        except ValidationError as exc:
            raise ValueError(f"treatment_engine_overrides: {exc}") from None
        return self.model_copy(update={"engine": engine})

    def engine_actor_options(self, *, treatment: bool = False) -> dict[str, float]:
        """Ray resources of an engine replica: its CPUs and, on a GPU profile, its GPUs."""
        if treatment:
            profile = self.treatment_engine_settings().engine.device_profile
            cpus, gpus = self.treatment_engine_num_cpus, self.treatment_engine_num_gpus
        else:
            profile = self.engine.device_profile
            cpus, gpus = self.engine_num_cpus, self.engine_num_gpus
        if gpus is None:
            gpus = 1.0 if profile == "gpu" else 0.0
        return {"num_cpus": cpus, **({"num_gpus": gpus} if gpus else {})}

    def token_table(self) -> TokenTable | None:
        token = self.auth_token.get_secret_value() if self.auth_token else None
        return TokenTable.build(
            token=token or None, name="client", tokens_file=self.auth_tokens_file
        )


def served_engine_config(base_model: str) -> VllmEngineConfig:
    """The engine serving builds (MAPPER_SERVING_ENGINE__*: dtype, block size, threads, ...) on
    `base_model`: what the evaluation and the benches run, so that a figure is the served
    engine's (a bfloat16 engine is evaluated in bfloat16)."""
    return ServingSettings().engine.model_copy(update={"base_model": base_model})


class ServingClientSettings(BaseSettings):
    """How mapperctl, the bench and scripts reach the router: MAPPER_SERVING_URL / _AUTH_TOKEN."""

    model_config = SettingsConfigDict(env_prefix="MAPPER_SERVING_", extra="ignore")

    url: str = Field(
        f"http://127.0.0.1:{DEFAULT_PORTS['serving_http']}", description="The router's base URL."
    )
    auth_token: SecretStr | None = Field(None, description="Bearer token sent to the router.")

    def bearer(self) -> str | None:
        token = self.auth_token.get_secret_value() if self.auth_token else ""
        return token or None
