"""The bench as a gate step: what the canary controller's `--bench-gate` calls between weight steps."""

from __future__ import annotations

from pathlib import Path

from llama_mapper.bench.locust_run import BenchConfig, BenchResult, run_bench
from llama_mapper.platform.settings.bench import report_root as default_report_root
from llama_mapper.platform.settings.serving import ServingClientSettings
from llama_mapper.registry.client import RegistryClient


def run_bench_gate(
    model: str,
    version: int,
    hardware_profile: str,
    *,
    host: str | None = None,
    grpc_host: str | None = None,
    arm: str | None = "treatment",
    users: int = 10,
    spawn_rate: float = 5.0,
    duration_s: float = 60.0,
    shape: str = "constant",
    registry: RegistryClient | None = None,
    report_root: Path | None = None,
    record: bool = True,
) -> BenchResult:
    """Load the router and judge `arm` (default: the treatment; None: all traffic) against the
    registry's p95 and error-rate targets of `model` on `hardware_profile`.

    Raises FailedPrecondition when the profile has no p95 target and Unavailable when the stack
    does not answer; otherwise returns the result (`.passed`, `.verdict.reasons`, `.judged`),
    recorded on `version` in the registry unless `record` is False. Locust runs as a subprocess,
    so calling this from a Ray actor or a gRPC process is safe.
    """
    config = BenchConfig(
        model=model,
        version=version,
        profile=hardware_profile,
        host=host or ServingClientSettings().url,
        grpc_host=grpc_host,
        arm=arm,
        users=users,
        spawn_rate=spawn_rate,
        duration_s=duration_s,
        shape=shape,
        report_root=report_root or default_report_root(),
        record=record,
    )
    if registry is not None:
        return run_bench(config, registry)
    with RegistryClient.from_env() as client:
        return run_bench(config, client)
