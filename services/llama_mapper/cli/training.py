"""`mapperctl model prepare` (the base model cache) and `mapperctl train submit` (a Ray job)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from llama_mapper.domain.errors import MapperError
from llama_mapper.inference.base_model import DEFAULT_MODEL_ID, prepare_base_model
from llama_mapper.platform.settings.common import common


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `model prepare` on mapperctl's subparsers."""
    model = subparsers.add_parser("model", help="base models: prepare the cache")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    prepare = model_sub.add_parser(
        "prepare",
        help="convert the bundled GGUF (or fetch a hub id / hash a local dir) into the model cache",
    )
    prepare.add_argument(
        "model_id",
        nargs="?",
        default=DEFAULT_MODEL_ID,
        help=f"bundled id, hub id or local directory (default {DEFAULT_MODEL_ID})",
    )
    prepare.add_argument(
        "--cache-dir",
        default=None,
        help="cache root (default $MAPPER_CACHE_DIR or ~/.cache/llama-mapper)",
    )
    prepare.add_argument("--revision", default=None, help="hub revision (hub ids only)")
    prepare.add_argument("--json", action="store_true", help="print the result as JSON")
    prepare.set_defaults(func=run_prepare)

    train = subparsers.add_parser("train", help="LoRA training jobs on the Ray cluster")
    train_sub = train.add_subparsers(dest="train_command", required=True)
    submit = train_sub.add_parser(
        "submit",
        help="`ray job submit` the training job, stream its logs, print the registered version",
    )
    submit.add_argument("--config", required=True, help="training config YAML (configs/*.yaml)")
    submit.add_argument(
        "--address",
        default=os.environ.get("RAY_JOB_ADDRESS", "http://127.0.0.1:8265"),
        help="Ray dashboard address (default $RAY_JOB_ADDRESS or %(default)s, as `make up` starts)",
    )
    submit.add_argument("--submission-id", help="Ray submission id (default: Ray generates one)")
    submit.add_argument("--json", action="store_true", help="print the job's summary as JSON")
    submit.set_defaults(func=run_submit)
    return model


def run_prepare(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        info = prepare_base_model(
            args.model_id, args.cache_dir or common().cache_dir, revision=args.revision
        )
    except MapperError as exc:
        print(f"mapperctl model prepare: {exc.message}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(info.as_dict(), indent=2))
    else:
        print(f"{info.model_id}: {info.path}")
        print(
            f"  sha256 {info.sha256}  ({info.source}, {info.dtype}, {time.monotonic() - started:.1f} s)"
        )
    return 0


def _git_commit() -> str | None:
    from llama_mapper.training.job import git_commit

    return git_commit()


def submit_command(args: argparse.Namespace) -> list[str]:
    """The `ray job submit` command line this wraps: what a user could type by hand."""
    ray = str(Path(sys.executable).with_name("ray"))
    command = [ray, "job", "submit", f"--address={args.address}", "--working-dir=."]
    if args.submission_id:
        command.append(f"--submission-id={args.submission_id}")
    commit = _git_commit()
    if commit:  # the job's working dir is an upload without .git: lineage needs it passed on
        command.append(
            f"--runtime-env-json={json.dumps({'env_vars': {'MAPPER_GIT_COMMIT': commit}})}"
        )
    return [*command, "--", "python", "-m", "llama_mapper.training.train", "--config", args.config]


def run_submit(args: argparse.Namespace) -> int:
    from llama_mapper.training.config import load_config

    load_config(args.config)  # an invalid config is refused here, before Ray sees it
    env = {
        **os.environ,
        "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token"),  # Ray 2.60's CLI needs it
        "MAPPER_PROJECT_DIR": str(Path.cwd()),
    }
    proc = subprocess.Popen(
        submit_command(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    summary: dict = {}
    assert proc.stdout is not None
    for line in proc.stdout:  # the job's logs, streamed as they come (to stderr under --json)
        print(line, end="", flush=True, file=sys.stderr if args.json else sys.stdout)
        stripped = line.strip()
        if stripped.startswith("{") and '"registration"' in stripped:
            summary = json.loads(stripped)
    if proc.wait() != 0:
        print(f"mapperctl train submit: the job failed (exit {proc.returncode})", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    registration = summary.get("registration") or {}
    if registration:
        print(f"registered {registration['model']} version {registration['version']}")
    else:
        print(
            "finished; not registered (no storage.registry in the config, no MAPPER_REGISTRY_ADDRESS)"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mapperctl")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
