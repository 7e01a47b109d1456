"""Every setting of the validation service, read from MAPPER_VALIDATION_* environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ValidationSettings(BaseSettings):
    """Configuration of the validation server; every field is MAPPER_VALIDATION_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix="MAPPER_VALIDATION_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the gRPC server binds to.")
    port: int = Field(50061, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    max_workers: int = Field(4, ge=1, description="Concurrent RPCs (validations run in threads).")
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
    grace_s: float = Field(
        10.0, ge=0, description="On SIGTERM, seconds in-flight validations get to finish."
    )
    log_json: bool = Field(False, description="Log one JSON object per line (containers).")
