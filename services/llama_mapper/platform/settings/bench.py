"""Settings of the Locust bench: what `mapperctl bench run` hands the locustfile (MAPPER_BENCH_*)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from llama_mapper.platform.settings.common import common


class LocustSettings(BaseSettings):
    """Read by the locustfile in each Locust process; the bench runner writes them with to_env()."""

    model_config = SettingsConfigDict(env_prefix="MAPPER_BENCH_", extra="ignore")

    payloads: Path = Field(
        Path("var/bench/payloads.jsonl"), description="JSON Lines payload file the users send."
    )
    shape: str = Field("standard", description="Load shape (bench/shapes.py).")
    tasks: str = Field("map=8,batch=1,analyze=1", description="Task weights of the HTTP user.")
    batch_size: int = Field(10, ge=1, le=100, description="Outputs per /v1/map/batch call.")
    tenants: int = Field(200, ge=1, description="Distinct tenants in the Zipf mix.")
    zipf: float = Field(1.1, gt=0, description="Zipf exponent of the tenant mix.")
    tenant_header: str = Field("x-tenant-id", description="Header that carries the tenant.")
    grpc_host: str = Field("", description="host:port of the gRPC ingress; empty: HTTP only.")
    token: str = Field("", description="Bearer token sent to the router.")
    wait_s: str = Field("0.05,0.25", description="`min,max` seconds a user waits between tasks.")
    timeout_s: float = Field(30.0, gt=0, description="Per-request timeout.")

    def wait_range(self) -> tuple[float, float]:
        low, high = (float(x) for x in self.wait_s.split(","))
        return low, high

    def to_env(self) -> dict[str, str]:
        prefix = self.model_config["env_prefix"]
        return {f"{prefix}{name.upper()}": str(value) for name, value in self.model_dump().items()}


def report_root() -> Path:
    return common().var_dir / "bench"
