"""`mapperctl model prepare`: put a base model into the cache and print where it is and its hash."""

from __future__ import annotations

import argparse
import json
import sys
import time

from llama_mapper.core.basemodel import DEFAULT_MODEL_ID, prepare_base_model
from llama_mapper.core.errors import MapperError


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
    return model


def run_prepare(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        info = prepare_base_model(args.model_id, args.cache_dir, revision=args.revision)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mapperctl")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
