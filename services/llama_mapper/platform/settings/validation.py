"""Settings of the validation service and its clients: MAPPER_VALIDATION_<FIELD>."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from llama_mapper.platform.settings.common import DEFAULT_PORTS, GrpcServiceSettings, local_address


class ValidationSettings(GrpcServiceSettings):
    """The validation server; every field is MAPPER_VALIDATION_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix="MAPPER_VALIDATION_", extra="ignore")

    port: int = Field(DEFAULT_PORTS["validation"], ge=0, le=65535, description="gRPC port.")
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
