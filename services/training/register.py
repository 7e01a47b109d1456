"""Registration of a finished run in the model registry, idempotent on the Ray submission id."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from llama_mapper.core.errors import FailedPrecondition

log = logging.getLogger(__name__)


def register_result(
    config: dict[str, Any], summary: dict[str, Any], adapter_dir: Path
) -> dict[str, Any] | None:
    """Register the adapter with its lineage; None (and a log line) when no registry is configured."""
    address = config["storage"].get("registry") or ""
    if not address:
        log.info("storage.registry is empty: the adapter stays at %s, unregistered", adapter_dir)
        return None
    try:
        from llama_mapper.registry import client as registry_client
    except ImportError as exc:
        raise FailedPrecondition(
            f"storage.registry is {address!r} but the registry client is not installed ({exc})"
        ) from exc
    lineage = {
        "base_model_id": summary["base_model"]["id"],
        "base_model_sha256": summary["base_model"]["sha256"],
        "dataset_manifest_digest": summary["dataset_manifest_digest"],
        "validation_report_digest": summary["validation_report_digest"],
        "ray_submission_id": summary["submission_id"],
        "git_commit": summary.get("git_commit") or "",
        "training_config": config,
    }
    version = registry_client.register_adapter(
        address,
        model=config["adapter"],
        adapter_dir=adapter_dir,
        lineage=lineage,
        metrics={k: v for k, v in summary["metrics"].items() if v is not None},
        idempotency_key=summary["submission_id"],
    )
    log.info("registered %s version %s", config["adapter"], version)
    return {"model": config["adapter"], "version": version}
