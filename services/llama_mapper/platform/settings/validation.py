"""Settings of the validation service and its clients: MAPPER_VALIDATION_<FIELD>."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from llama_mapper.platform.settings.common import (
    DEFAULT_PORTS,
    GrpcServiceSettings,
    common,
    local_address,
)
from llama_mapper.platform.settings.registry import RegistryClientSettings

# The local stack's signing key, generated once under the var dir next to the registry token.
SIGNING_KEY_FILE = "validation-signing-key"


class ValidationSettings(GrpcServiceSettings):
    """The validation server and its clients; every field is MAPPER_VALIDATION_<FIELD>.

    Every call needs a bearer token: `token`, else the registry's (MAPPER_REGISTRY_TOKEN), so the
    local stack runs on one token. Reports are signed with `signing_key`; the training gate checks
    the signature with the same key."""

    model_config = SettingsConfigDict(env_prefix="MAPPER_VALIDATION_", extra="ignore")

    port: int = Field(DEFAULT_PORTS["validation"], ge=0, le=65535, description="gRPC port.")
    token: SecretStr | None = Field(
        None,
        description="Bearer token every call needs (the server checks it, clients send it); "
        "unset: MAPPER_REGISTRY_TOKEN. The server refuses to start with neither, whatever "
        "ALLOW_INSECURE_WRITES or REQUIRE_AUTH_FOR_READS say.",
    )
    max_workers: int = Field(4, ge=1, description="Concurrent RPCs (validations run in threads).")
    address: str = Field(
        local_address("validation"), description="host:port clients reach the service at."
    )
    ca_file: Path | None = Field(
        None, description="PEM CA bundle: clients speak TLS to the service and check it."
    )
    max_row_bytes: int = Field(
        1 << 20,
        ge=1024,
        description="Largest JSON Lines row accepted; a longer row is refused with "
        "INVALID_ARGUMENT after reading this many bytes of it.",
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="S3 endpoint for s3:// datasets (MinIO, moto); unset: AWS_ENDPOINT_URL or AWS.",
    )
    dataset_roots: list[Path] = Field(
        default_factory=list,
        description="Local directories datasets and golden sets may be read from, a JSON list "
        '(["/data/datasets"]); paths are resolved, so `..` and symlinks cannot leave them; a '
        "path outside every root is PERMISSION_DENIED. Empty: no local dataset is readable.",
    )
    s3_buckets: list[str] = Field(
        default_factory=list,
        description='S3 buckets datasets may be read from, a JSON list (["mapper-data"]); any '
        "other bucket is PERMISSION_DENIED. Empty: no s3:// dataset is readable.",
    )
    signing_key: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key that signs every validation report (manifest digest, config "
        f"hash, policy); the training gate verifies it. Unset: <var dir>/{SIGNING_KEY_FILE} "
        "when the local stack generated one.",
    )

    def bearer(self) -> str | None:
        """The token callers must present, and the one clients send: token, else the registry
        token. An empty value counts as unset: it must never match an empty `Bearer ` header."""
        return super().bearer() or RegistryClientSettings().bearer()

    def signing_secret(self) -> bytes | None:
        """The report signing key: signing_key, else the local stack's key file, else None."""
        if self.signing_key is not None and self.signing_key.get_secret_value():
            return self.signing_key.get_secret_value().encode("utf-8")
        path = common().var_dir / SIGNING_KEY_FILE
        if path.is_file():
            return path.read_text(encoding="utf-8").strip().encode("utf-8") or None
        return None
