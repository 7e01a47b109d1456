"""Registration of a finished run in the model registry, idempotent on the Ray submission id."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from llama_mapper.platform.settings.registry import RegistryClientSettings

log = logging.getLogger(__name__)


def lineage_of(config: dict[str, Any], summary: dict[str, Any]) -> dict[str, str]:
    """The registry's Lineage message fields, from the run's summary."""
    return {
        "base_model_id": config["base_model"]["id"],
        "base_model_revision": config["base_model"].get("revision", ""),
        "base_model_sha256": summary["base_model"]["sha256"],
        "training_config_json": json.dumps(config, sort_keys=True),
        "dataset_name": Path(config["dataset"]["path"]).name,
        "dataset_manifest_sha256": summary["dataset_manifest_digest"],
        "validation_report_sha256": summary["validation_report_digest"],
        "ray_submission_id": summary["submission_id"],
        "git_commit": summary.get("git_commit") or "",
    }


def register_result(
    config: dict[str, Any], summary: dict[str, Any], adapter_dir: Path
) -> dict[str, Any] | None:
    """Register the adapter with its lineage; None (and a log line) when no registry is configured.

    The submission id is the idempotency key: a driver retried after a crash, or a job whose worker
    died and recovered, gets the version registered the first time instead of a second one.
    """
    # A job submitted to the `make up` cluster inherits MAPPER_REGISTRY_ADDRESS from the Ray head.
    settings = RegistryClientSettings()
    configured = "address" in settings.model_fields_set
    address = config["storage"].get("registry") or (settings.address if configured else "")
    if not address:
        log.info(
            "no registry (storage.registry and MAPPER_REGISTRY_ADDRESS are empty): the adapter "
            "stays at %s, unregistered",
            adapter_dir,
        )
        return None
    from llama_mapper.registry.client import RegistryClient

    with RegistryClient.from_env(address=address) as client:
        response = client.register_directory(
            config["adapter"],
            adapter_dir,
            lineage=lineage_of(config, summary),
            idempotency_key=summary["submission_id"],
            display_name=config["name"],
            description=f"trained by llama_mapper.training ({summary['steps']} steps)",
        )
        version = response.version.version
        metrics = {k: float(v) for k, v in summary["metrics"].items() if v is not None}
        if response.created and metrics:
            client.record_metrics(config["adapter"], version, metrics)
    log.info(
        "%s %s version %d", "registered" if response.created else "already registered",
        config["adapter"], version,
    )  # fmt: skip
    return {"model": config["adapter"], "version": version, "created": response.created}
