"""Settings of the local stack (`make up`): the Ray head's ports and temp dir, and the services'."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from llama_mapper.platform.settings.common import DEFAULT_PORTS, common

# Ray hands its workers ports from this range (`ray start --min-worker-port/--max-worker-port`
# defaults); a head port inside it makes `ray start --head` fail.
RAY_WORKER_PORTS = range(10002, 20000)


class RaySettings(BaseSettings):
    """The local Ray head: MAPPER_RAY_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix="MAPPER_RAY_", extra="ignore")

    port: int = Field(DEFAULT_PORTS["ray_gcs"], ge=1, le=65535, description="GCS port.")
    dashboard_port: int = Field(
        DEFAULT_PORTS["ray_dashboard"], ge=1, le=65535, description="Dashboard and job API port."
    )
    client_port: int = Field(
        DEFAULT_PORTS["ray_client"], ge=1, le=65535, description="Ray client server port."
    )
    agent_port: int = Field(
        DEFAULT_PORTS["ray_agent"], ge=1, le=65535, description="Dashboard agent's HTTP port."
    )
    temp_dir: Path | None = Field(
        None,
        description="The head's temp dir; unset: /tmp/ray-mapper-<digest of the var dir>, so two "
        "stacks with their own MAPPER_VAR_DIR never share one (Ray's socket paths must stay short).",
    )

    def head_temp_dir(self, var_dir: Path) -> Path:
        if self.temp_dir is not None:
            return self.temp_dir
        digest = hashlib.sha256(str(var_dir.resolve()).encode()).hexdigest()[:10]
        return Path("/tmp") / f"ray-mapper-{digest}"  # noqa: S108 - short unix socket paths

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"


def var_dir() -> Path:
    return common().var_dir
