"""Every setting of the registry service, read from MAPPER_REGISTRY_* environment variables."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from llama_mapper.inference.compat import LLAMA_TARGET_MODULES

DEFAULT_ROOT = Path(os.environ.get("MAPPER_VAR_DIR", "var")) / "registry"


class RegistrySettings(BaseSettings):
    """Configuration of the registry server; every field is MAPPER_REGISTRY_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix="MAPPER_REGISTRY_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the gRPC server binds to.")
    port: int = Field(50052, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    database_url: str = Field(
        f"sqlite:///{DEFAULT_ROOT / 'registry.db'}",
        description="SQLAlchemy URL of the metadata database: sqlite:///path (embedded default) "
        "or postgresql+psycopg://user@host/db.",
    )
    artifact_uri: str = Field(
        str(DEFAULT_ROOT / "artifacts"),
        description="Where adapter files live: a local directory or s3://bucket/prefix.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint (e.g. http://127.0.0.1:9000 or moto's server); unset: AWS."
    )
    s3_region: str = Field("us-east-1", description="S3 region name.")
    token: SecretStr | None = Field(
        None, description="Bearer token that mutating RPCs (and reads, if required) must carry."
    )
    allow_insecure_writes: bool = Field(
        False,
        description="Local development only: accept mutations without a token when none is set.",
    )
    require_auth_for_reads: bool = Field(False, description="Reads need the bearer token too.")
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate chain; enables TLS with key."
    )
    tls_key_file: Path | None = Field(None, description="PEM private key; enables TLS with cert.")
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
    max_upload_bytes: int = Field(
        4 * 1024**3, ge=1, description="Largest total upload of one registration, in bytes."
    )
    staging_dir: Path | None = Field(
        None,
        description="Where uploads are received and verified before publishing; default "
        "<artifact dir>/.staging (local store, same filesystem) or var/registry/staging (S3).",
    )
    staging_sweep_age_s: float = Field(
        3600.0,
        ge=0,
        description="At start-up, staged uploads older than this are removed (left by a crash).",
    )
    max_workers: int = Field(16, ge=1, description="gRPC server worker threads.")
    grace_seconds: float = Field(10.0, ge=0, description="Time in-flight RPCs get on shutdown.")
    db_pool_size: int = Field(8, ge=1, description="Database connections kept open (PostgreSQL).")

    @model_validator(mode="after")
    def _tls_pair(self) -> RegistrySettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError(
                "set both MAPPER_REGISTRY_TLS_CERT_FILE and MAPPER_REGISTRY_TLS_KEY_FILE, or neither"
            )
        return self

    @property
    def writes_enabled_without_token(self) -> bool:
        return self.token is None and self.allow_insecure_writes
