"""`mapperctl data build` and `mapperctl data validate`: argument parsing only; the work is elsewhere."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds `data` with its `build` and `validate` subcommands."""
    data = subparsers.add_parser("data", help="build and validate training datasets")
    commands = data.add_subparsers(dest="data_command", required=True)

    build = commands.add_parser("build", help="build mapper + analyst datasets and their manifest")
    build.add_argument("--out", type=Path, required=True, help="output directory")
    build.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    build.add_argument(
        "--size",
        choices=("default", "small"),
        default="default",
        help="default: >= 5,000 mapper rows; small: a quick build for tests",
    )
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    build.set_defaults(func=run_build)

    validate = commands.add_parser(
        "validate", help="validate a dataset through the validation gRPC service"
    )
    validate.add_argument("dataset", help="dataset directory or s3://bucket/prefix")
    validate.add_argument(
        "--config", type=Path, required=True, help="training config (YAML or JSON)"
    )
    validate.add_argument(
        "--address",
        default=None,
        help="validation service host:port (default: $MAPPER_VALIDATION_ADDRESS, else "
        "127.0.0.1:50061; an in-process service is started when none answers)",
    )
    validate.add_argument("--golden", default="", help="golden set path or URI (default: bundled)")
    validate.add_argument("--json", action="store_true", help="print the whole report as JSON")
    validate.set_defaults(func=run_validate)
    return data


def _quiet_presidio() -> None:
    # Presidio logs one INFO line per analyzed batch.
    logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)


def run_build(args: argparse.Namespace) -> int:
    from llama_mapper.datasets.builder import build
    from llama_mapper.domain.manifest import manifest_digest

    _quiet_presidio()
    manifest = build(args.out, seed=args.seed, size=args.size, progress=not args.quiet)
    counts = manifest["counts"]
    print(
        f"wrote {args.out}: {counts['mapper']['rows']} mapper rows "
        f"({len(counts['mapper']['by_label'])} labels), {counts['analyst']['rows']} analyst rows"
    )
    for name, entry in manifest["files"].items():
        print(f"  {name:22s} {entry['rows']:6d} rows  sha256 {entry['sha256'][:16]}")
    print(f"manifest sha256 {manifest_digest(manifest)}")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    import grpc

    from llama_mapper.validation.client import validate_dataset

    _quiet_presidio()
    try:
        report = validate_dataset(
            args.dataset, args.config, address=args.address, golden_set_uri=args.golden
        )
    except grpc.RpcError as error:
        print(f"mapperctl: {error.code().name}: {error.details()}", file=sys.stderr)
        return 2
    _write_report(args.dataset, report)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        for check in report["checks"]:
            mark = "PASS" if check["passed"] else "FAIL"
            print(f"{mark}  {check['name']:18s} {check['message']}")
            if not check["passed"] and check.get("offending_row_ids"):
                print(f"      first offending rows: {', '.join(check['offending_row_ids'][:5])}")
        print(f"verdict {report['verdict']}  report sha256 {report['report_sha256']}")
        print(f"dataset manifest sha256 {report['dataset_manifest_sha256']}")
    return 0 if report["verdict"] == "VERDICT_PASSED" else 1


def _write_report(dataset: str, report: dict) -> None:
    """Keeps the report next to a local dataset, where the training gate looks for it. Written
    atomically, pass or fail: the gate refuses a failed one and says which checks failed."""
    if "://" in dataset:
        return
    from llama_mapper.training.validation_gate import REPORT_NAME

    path = Path(dataset) / REPORT_NAME
    tmp = path.with_name(f".{REPORT_NAME}.tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    print(f"report written to {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (`python -m llama_mapper.cli.datasets`) until the lead wires mapperctl."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="mapperctl")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
