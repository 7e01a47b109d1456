"""Settings of the registry service: MAPPER_REGISTRY_<FIELD>, and what its clients read."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from llama_mapper.inference.compat import LLAMA_TARGET_MODULES
from llama_mapper.platform.settings.common import (
    DEFAULT_PORTS,
    GrpcServiceSettings,
    common,
    local_address,
)


def _root() -> Path:
    return common().var_dir / "registry"


class RegistrySettings(GrpcServiceSettings):
    """The registry server; every field is MAPPER_REGISTRY_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix="MAPPER_REGISTRY_", extra="ignore")

    port: int = Field(DEFAULT_PORTS["registry"], ge=0, le=65535, description="gRPC port.")
    database_url: str = Field(
        "",
        description="SQLAlchemy URL of the metadata database: sqlite:///path or "
        "postgresql+psycopg://user@host/db; unset: sqlite under <var dir>/registry.",
    )
    artifact_uri: str = Field(
        "",
        description="Where adapter files live: a local directory or s3://bucket/prefix; unset: "
        "<var dir>/registry/artifacts.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint (e.g. http://127.0.0.1:9000 or moto's server); unset: AWS."
    )
    s3_region: str = Field("us-east-1", description="S3 region name.")
    max_lora_rank: int = Field(16, ge=1, description="Highest LoRA rank the serving engine loads.")
    extra_target_modules: list[str] = Field(
        default_factory=list,
        description="Target modules accepted on top of the base family's set "
        f"(Llama family: {', '.join(LLAMA_TARGET_MODULES)}).",
    )
    gated_aliases: list[str] = Field(
        default_factory=lambda: ["champion"],
        description="Aliases that refuse a version whose latest gate failed, unless forced.",
    )
    promotion_gated_models: list[str] = Field(
        default_factory=lambda: ["analyst"],
        description="Models without a canary, which take traffic by promotion: their gated "
        "aliases also need the version's latest gate for the profile to have passed (the "
        "rollout's traffic gate), unless forced.",
    )
    max_upload_bytes: int = Field(
        4 * 1024**3, ge=1, description="Largest total upload of one registration, in bytes."
    )
    staging_dir: Path | None = Field(
        None,
        description="Where uploads are received and verified before publishing; unset: "
        "<artifact dir>/.staging (local store, same filesystem) or <var dir>/registry/staging (S3).",
    )
    staging_sweep_age_s: float = Field(
        3600.0,
        ge=0,
        description="At start-up, staged uploads older than this are removed (left by a crash).",
    )
    db_pool_size: int = Field(8, ge=1, description="Database connections kept open (PostgreSQL).")
    default_hardware_profile: str = Field(
        "cpu-2core",
        description="Profile whose gate a rollout's treatment must have passed when it names none.",
    )
    lease_sweep_s: float = Field(
        2.0,
        ge=0,
        description="How often rollouts whose controller lease ended are aborted; 0: never.",
    )

    @model_validator(mode="after")
    def _defaults_under_var_dir(self) -> RegistrySettings:
        if not self.database_url:
            self.database_url = f"sqlite:///{_root() / 'registry.db'}"
        if not self.artifact_uri:
            self.artifact_uri = str(_root() / "artifacts")
        return self

    def staging_root(self) -> Path:
        if self.staging_dir is not None:
            return self.staging_dir
        if self.artifact_uri.startswith("s3://"):
            return _root() / "staging"
        return Path(self.artifact_uri) / ".staging"


class RegistryClientSettings(BaseSettings):
    """How clients (mapperctl, training, evaluation, serving, bench) reach the registry."""

    model_config = SettingsConfigDict(env_prefix="MAPPER_REGISTRY_", extra="ignore")

    address: str = Field(local_address("registry"), description="host:port of the registry.")
    token: SecretStr | None = Field(None, description="Bearer token sent with every call.")
    ca_file: Path | None = Field(
        None, description="PEM CA bundle: the client speaks TLS and checks the server against it."
    )
    tls: bool = Field(False, description="Speak TLS with the system's CA roots (no ca_file).")
    actor: str | None = Field(
        None, description="Who the caller says it acts as; history records it beside the principal."
    )
    timeout_s: float = Field(60.0, gt=0, description="Deadline of one call.")

    def bearer(self) -> str | None:
        return (
            self.token.get_secret_value() if self.token and self.token.get_secret_value() else None
        )
