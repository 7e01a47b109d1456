"""One training job: gate the dataset, prepare the base, run the recipe on Ray Train, export, register."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llama_mapper.domain.errors import FailedPrecondition, MapperError
from llama_mapper.inference.base_model import prepare_base_model
from llama_mapper.platform.settings.common import common
from llama_mapper.training.artifacts import export_adapter, write_summary
from llama_mapper.training.register import register_result
from llama_mapper.training.validation_gate import check_dataset

log = logging.getLogger(__name__)

# Environment variables with this prefix travel from the driver to every training worker (workers
# of a running cluster do not inherit the driver's environment).
FORWARDED_ENV_PREFIX = "MAPPER_"


def submission_id() -> str | None:
    """The `ray job submit` submission id, when this driver runs as a Ray job."""
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR

    raw = os.environ.get(RAY_JOB_CONFIG_JSON_ENV_VAR)
    if not raw:
        return None
    return json.loads(raw).get("metadata", {}).get("job_submission_id")


def git_commit() -> str | None:
    if common().git_commit:
        return common().git_commit
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run_dir(config: dict[str, Any]) -> Path:
    storage = config["storage"]["path"]
    if "://" in storage:
        return common().cache_dir / "runs" / config["name"]
    return Path(storage) / config["name"]


@contextlib.contextmanager
def exclusive_run(directory: Path) -> Iterator[None]:
    """Holds the run directory for one job: a second job of the same name (same directory) is
    refused while the first runs, instead of both writing, pruning and resuming each other's
    checkpoints (two at once once left one without the checkpoint it had just reported). The lock
    is an flock, so a job that dies releases it; the file names the holder."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ".run.lock"
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise FailedPrecondition(
                f"training run {directory.name!r} is already running ({holder}) in {directory}: "
                "wait for it to finish, or give this run another `name` in its config"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(
            f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
        )
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def preflight(config: dict[str, Any]):
    """Everything that must hold before a worker starts: the gate, then the base model's hash."""
    dataset = config["dataset"]
    required = [dataset["train_file"]]
    if (Path(dataset["path"]) / dataset["eval_file"]).is_file():
        required.append(dataset["eval_file"])
    gate = check_dataset(dataset["path"], required)
    base = config["base_model"]
    info = prepare_base_model(base["id"], common().cache_dir, revision=base.get("revision"))
    if base.get("sha256") and base["sha256"] != info.sha256:
        raise FailedPrecondition(
            f"base model {base['id']} has sha256 {info.sha256}, the config expects {base['sha256']}"
        )
    return gate, info


def build_trainer(config: dict[str, Any], base_path: str, loop_config_extra: dict | None = None):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from llama_mapper.training.recipe import train_loop_per_worker

    scaling, storage = config["scaling"], config["storage"]
    directory = run_dir(config)
    loop_config = {
        "config": config,
        "base_model_path": base_path,
        "tensorboard_dir": str(directory / "tensorboard"),
        "env": {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIX)},
        **(loop_config_extra or {}),
    }
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if scaling["use_gpu"] else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=scaling["num_workers"],
            use_gpu=scaling["use_gpu"],
            resources_per_worker={"CPU": scaling["cpus_per_worker"]},
        ),
        run_config=RunConfig(
            name=config["name"],
            storage_path=storage["path"],
            failure_config=FailureConfig(max_failures=scaling["max_failures"]),
            checkpoint_config=CheckpointConfig(num_to_keep=config["checkpoint"]["num_to_keep"]),
        ),
    )


def run_job(config: dict[str, Any], *, ray_address: str | None = None) -> dict[str, Any]:
    """Train `config` to a registered adapter and return the training summary."""
    started = time.monotonic()
    gate, base = preflight(config)  # refused before anything is written, the run directory too
    with exclusive_run(run_dir(config)):
        return _run_job(config, gate, base, started=started, ray_address=ray_address)


def _run_job(
    config: dict[str, Any], gate: Any, base: Any, *, started: float, ray_address: str | None
) -> dict[str, Any]:
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_address or os.environ.get("RAY_ADDRESS"), log_to_driver=True)
    trainer = build_trainer(config, str(base.path))
    fit_started = time.monotonic()
    result = trainer.fit()
    fit_seconds = time.monotonic() - fit_started
    if result.error is not None or result.checkpoint is None:
        raise MapperError(
            f"training run {config['name']} ended without a final checkpoint: {result.error}"
        )

    directory = run_dir(config)
    with result.checkpoint.as_directory() as checkpoint_dir:
        state = json.loads((Path(checkpoint_dir) / "trainer_state.json").read_text())
        if not state["final"]:
            raise MapperError(
                f"latest checkpoint of {config['name']} is not final (step {state['step']})"
            )
        manifest = export_adapter(Path(checkpoint_dir), directory / "adapter", base.model_id)
    history = state["history"]
    submission = submission_id() or f"local:{config['name']}:{manifest['sha256'][:16]}"
    summary = {
        "name": config["name"],
        "adapter": config["adapter"],
        "submission_id": submission,
        "git_commit": git_commit(),
        "adapter_dir": str(directory / "adapter"),
        "adapter_sha256": manifest["sha256"],
        "serving_problems": manifest["serving_problems"],
        "checkpoint": result.checkpoint.path,
        "base_model": {"id": base.model_id, "sha256": base.sha256, "source": base.source},
        "dataset_manifest_digest": gate.manifest_digest,
        "validation_report_digest": gate.report_digest,
        "num_workers": config["scaling"]["num_workers"],
        "steps": state["step"],
        "train_rows": state["train_rows"],
        "eval_rows": state["eval_rows"],
        "tokens": state["tokens"],
        "train_time_s": state["elapsed_s"],
        "tokens_per_s": state["tokens"] / max(state["elapsed_s"], 1e-9),
        "steps_per_s": state["step"] / max(state["elapsed_s"], 1e-9),
        "fit_wall_time_s": fit_seconds,
        "wall_time_s": time.monotonic() - started,
        "losses": history["loss"],
        "eval_losses": history["eval_loss"],
        "metrics": {
            "final_loss": history["loss"][-1][1] if history["loss"] else None,
            "eval_loss": history["eval_loss"][-1][1] if history["eval_loss"] else None,
        },
        "config": config,
    }
    summary["registration"] = register_result(config, summary, directory / "adapter")
    write_summary(directory, summary)
    log.info(
        "run %s: %d steps, %.0f tokens/s, adapter %s",
        config["name"], summary["steps"], summary["tokens_per_s"], summary["adapter_dir"],
    )  # fmt: skip
    return summary
