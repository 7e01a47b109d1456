"""Settings every component shares: the writable and cache directories, default ports, and the
gRPC server fields (bind address, tokens, TLS, workers) that each service's class inherits."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from llama_mapper.platform.auth import TokenTable

# Every default port of the local stack, in one place. Ray's worker ports are 10002-19999: none
# of these may fall inside that range (`mapperctl stack up` checks what the environment sets).
DEFAULT_PORTS = {
    "validation": 50051,
    "registry": 50052,
    "evaluation": 50053,
    "serving_http": 8000,
    "serving_grpc": 9000,
    "ray_gcs": 6380,  # 6379 is Redis on these machines
    "ray_dashboard": 8265,
    "ray_client": 10001,
    "ray_agent": 52375,
}


def local_address(service: str) -> str:
    return f"127.0.0.1:{DEFAULT_PORTS[service]}"


class CommonSettings(BaseSettings):
    """MAPPER_<FIELD>: where the project writes and caches, and how processes log."""

    model_config = SettingsConfigDict(env_prefix="MAPPER_", extra="ignore")

    var_dir: Path = Field(
        Path("var"),
        description="Root of everything a local stack writes (databases, artifacts, reports, "
        "logs, pids); services default their own directories under it.",
    )
    cache_dir: Path = Field(
        Path.home() / ".cache" / "llama-mapper",
        description="Prepared base models and downloaded adapters.",
    )
    project_dir: Path | None = Field(
        None,
        description="Checkout root for relative config paths (set by `mapperctl train submit` for "
        "Ray jobs, whose working directory is a copy).",
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="`json` writes one JSON object per log line (containers)."
    )
    git_commit: str = Field("", description="Commit recorded in a trained version's lineage.")


def common() -> CommonSettings:
    """Read now, not at import: tests and the local stack set these per process."""
    return CommonSettings()


class GrpcServiceSettings(BaseSettings):
    """The fields every gRPC server has; each service's class sets its own env prefix and port."""

    host: str = Field("127.0.0.1", description="Address the gRPC server binds to.")
    port: int = Field(0, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    token: SecretStr | None = Field(
        None,
        description="Bearer token of the operator principal (every right): writes need it, and "
        "reads when require_auth_for_reads.",
    )
    tokens_file: Path | None = Field(
        None,
        description='More principals: JSON {"principals": [{"name", "token_sha256", "rights"}]} '
        "with rights among read and write; a token with too few rights gets PERMISSION_DENIED.",
    )
    allow_insecure_writes: bool = Field(
        False,
        description="Local development only: start without any token and accept every call.",
    )
    require_auth_for_reads: bool = Field(False, description="Reads need a valid token too.")
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate chain; with tls_key_file, the server speaks TLS only."
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    max_workers: int = Field(16, ge=1, description="gRPC server worker threads.")
    grace_s: float = Field(10.0, ge=0, description="Seconds in-flight RPCs get on SIGTERM.")
    max_message_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest gRPC message received or sent."
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> GrpcServiceSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            prefix = self.model_config.get("env_prefix", "")
            raise ValueError(f"set both {prefix}TLS_CERT_FILE and {prefix}TLS_KEY_FILE, or neither")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    def bearer(self) -> str | None:
        """The operator token; an empty value counts as unset (it must never match `Bearer `)."""
        return (
            self.token.get_secret_value() if self.token and self.token.get_secret_value() else None
        )

    def token_table(self, principal: str = "operator") -> TokenTable | None:
        return TokenTable.build(token=self.bearer(), name=principal, tokens_file=self.tokens_file)
