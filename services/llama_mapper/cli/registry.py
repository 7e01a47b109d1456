"""`mapperctl registry list|show|register|history|promote|rollback|targets`: the registry from a terminal."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from google.protobuf.json_format import MessageToDict

from llama_mapper.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from llama_mapper.platform.settings.registry import RegistryClientSettings
from llama_mapper.platform.terminal import print_table
from llama_mapper.registry.client import RegistryClient
from llama_mapper.registry.domain import TARGET_FIELDS


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `registry ...` on mapperctl's subparsers; each command sets `func(args) -> int`."""
    registry = subparsers.add_parser("registry", help="models, versions, aliases and their history")
    registry.add_argument(
        "--address",
        default=RegistryClientSettings().address,
        help="registry host:port (default $MAPPER_REGISTRY_ADDRESS or %(default)s)",
    )
    registry.add_argument(
        "--token", default=None, help="bearer token (default $MAPPER_REGISTRY_TOKEN)"
    )
    registry.add_argument("--ca-file", default=None, help="PEM root certificate: connect with TLS")
    commands = registry.add_subparsers(dest="registry_command", required=True, metavar="COMMAND")

    ls = commands.add_parser("list", help="models, or the versions of one model")
    ls.add_argument("model", nargs="?", help="list this model's versions")
    ls.add_argument("--all", action="store_true", help="include deleted versions")
    ls.set_defaults(func=cmd_list)

    show = commands.add_parser("show", help="one version: lineage, files, metrics, gates")
    show.add_argument("model")
    show.add_argument("version", nargs="?", help="version number or alias")
    show.add_argument(
        "--version", dest="version_option", metavar="N", help="the same as the positional VERSION"
    )
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=cmd_show)

    register = commands.add_parser(
        "register",
        help="upload and register an adapter directory trained elsewhere",
        description="Checks the directory for serving compatibility (PEFT LoRA, safetensors, rank, "
        "target modules, base), uploads it with sha256 per file and registers the next version. "
        "Registering the same files again returns the version they already are.",
    )
    register.add_argument("model")
    register.add_argument("dir", type=Path, help="adapter_config.json + adapter_model.safetensors")
    register.add_argument(
        "--lineage",
        type=Path,
        help="JSON file of lineage fields (base_model_id, base_model_sha256, dataset_name, "
        "dataset_manifest_sha256, training_config_json, git_commit, ...)",
    )
    register.add_argument(
        "--base-model",
        default=None,
        help="base model id when the lineage file names none (default: the bundled base); its "
        "sha256 is read from the prepared copy (`mapperctl model prepare`)",
    )
    register.add_argument("--name", default="", help="display name (default: the directory's)")
    register.add_argument("--reason", default="", help="why; the version's description")
    register.add_argument("--json", action="store_true", help="print the version as JSON")
    register.set_defaults(func=cmd_register)

    history = commands.add_parser("history", help="the audit history of a model")
    history.add_argument("model")
    history.add_argument("--subject", default="", help="only this alias, version or 'rollout'")
    history.set_defaults(func=cmd_history)

    promote = commands.add_parser("promote", help="point an alias at a version (compare-and-set)")
    promote.add_argument("model")
    promote.add_argument("version", type=int)
    promote.add_argument("--alias", default="champion", help="default: %(default)s")
    promote.add_argument("--reason", default="", help="recorded in the history")
    promote.add_argument(
        "--force", action="store_true", help="promote despite a failed gate (needs --reason)"
    )
    promote.add_argument(
        "--profile",
        default="",
        help="hardware profile whose passed gate a model without a canary (the analyst) needs "
        "(default: the registry's, MAPPER_REGISTRY_DEFAULT_HARDWARE_PROFILE)",
    )
    promote.set_defaults(func=cmd_promote)

    rollback = commands.add_parser(
        "rollback", help="move an alias back to the version it pointed to before"
    )
    rollback.add_argument("model")
    rollback.add_argument("--alias", default="champion", help="default: %(default)s")
    rollback.add_argument(
        "--to", type=int, default=None, help="this version instead of the previous one"
    )
    rollback.add_argument("--reason", required=True, help="recorded in the history")
    rollback.add_argument("--force", action="store_true", help="even if that version's gate failed")
    rollback.set_defaults(func=cmd_rollback)

    targets = commands.add_parser(
        "targets", help="show or set performance targets per hardware profile"
    )
    targets.add_argument("model")
    targets.add_argument("--profile", default="", help="hardware profile, e.g. cpu-2core or h100")
    targets.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help=f"set a target (needs --profile); fields: {', '.join(TARGET_FIELDS)}",
    )
    targets.add_argument("--reason", default="", help="recorded in the history")
    targets.set_defaults(func=cmd_targets)
    return registry


def _client(args: argparse.Namespace) -> RegistryClient:
    ca = Path(args.ca_file).read_bytes() if args.ca_file else None
    return RegistryClient.from_env(address=args.address, token=args.token, root_certificates=ca)


def _time(stamp) -> str:
    return stamp.ToDatetime().strftime("%Y-%m-%d %H:%M:%S") if stamp.seconds else ""


def _current(client: RegistryClient, model: str, alias: str) -> int:
    try:
        return client.resolve_alias(model, alias).version
    except NotFound:
        return 0


def cmd_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if not args.model:
            rows = [
                (
                    m.name,
                    m.latest_version,
                    m.version_count,
                    ", ".join(f"{a.name}={a.version}" for a in m.aliases),
                )
                for m in client.list_models()
            ]
            print_table(("model", "latest", "versions", "aliases"), rows)
            return 0
        rows = [
            (
                v.version,
                v.display_name,
                v.lineage.base_model_id,
                v.lora_rank,
                ", ".join(v.aliases),
                f"{v.temperature:.3f}" if v.HasField("temperature") else "",
                _time(v.create_time),
                v.created_by,
                "deleted" if v.deleted else "",
            )
            for v in client.list_versions(args.model, include_deleted=args.all)
        ]
        print_table(
            ("version", "name", "base model", "rank", "aliases", "temp", "created", "by", ""), rows
        )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    if (args.version is None) == (args.version_option is None):
        print(
            "mapperctl registry show: name one version: MODEL VERSION or MODEL --version N",
            file=sys.stderr,
        )
        return 2
    args.version = args.version if args.version is not None else args.version_option
    with _client(args) as client:
        number = (
            int(args.version)
            if args.version.isdigit()
            else client.resolve_alias(args.model, args.version).version
        )
        details = client.get_version(args.model, number, include_deleted=True)
    if args.json:
        print(json.dumps(MessageToDict(details, preserving_proto_field_name=True), indent=2))
        return 0
    v = details.version
    lineage = v.lineage
    print(f"{v.model} v{v.version}  {v.display_name}")
    fields = [
        ("aliases", ", ".join(v.aliases) or "-"),
        ("created", f"{_time(v.create_time)} by {v.created_by}"),
        ("base model", f"{lineage.base_model_id}@{lineage.base_model_revision or '-'}"),
        ("base sha256", lineage.base_model_sha256),
        (
            "dataset",
            f"{lineage.dataset_name or '-'} manifest {lineage.dataset_manifest_sha256 or '-'}",
        ),
        ("validation report", lineage.validation_report_sha256 or "-"),
        ("ray submission", lineage.ray_submission_id or "-"),
        ("git commit", lineage.git_commit or "-"),
        ("lora", f"r={v.lora_rank} on {', '.join(v.target_modules)}"),
        ("artifact sha256", v.artifact_sha256),
        ("temperature", f"{v.temperature:.4f}" if v.HasField("temperature") else "-"),
    ]
    if v.deleted:
        fields.append(("deleted", f"{_time(v.delete_time)} by {v.deleted_by}: {v.delete_reason}"))
    for name, value in fields:
        print(f"  {name:<18} {value}")
    print()
    print_table(("file", "bytes", "sha256"), [(f.name, f.size_bytes, f.sha256) for f in v.files])
    if details.metrics:
        print()
        print_table(
            ("metrics at", "by", "eval set", "values"),
            [
                (
                    _time(m.record_time),
                    m.recorded_by,
                    m.eval_set_sha256[:12],
                    " ".join(f"{k}={m.values[k]:g}" for k in sorted(m.values)),
                )
                for m in details.metrics
            ],
        )
    if details.benchmarks:
        print()
        print_table(
            ("benchmark at", "profile", "values"),
            [
                (
                    _time(b.record_time),
                    b.hardware_profile,
                    " ".join(f"{k}={b.values[k]:g}" for k in sorted(b.values)),
                )
                for b in details.benchmarks
            ],
        )
    if details.gate_results:
        print()
        print_table(
            ("gate at", "profile", "result", "summary"),
            [
                (
                    _time(g.record_time),
                    g.hardware_profile,
                    "passed" if g.passed else "FAILED",
                    g.summary,
                )
                for g in details.gate_results
            ],
        )
    return 0


_LINEAGE_FIELDS = (
    "base_model_id",
    "base_model_sha256",
    "base_model_revision",
    "training_config_json",
    "dataset_name",
    "dataset_manifest_sha256",
    "validation_report_sha256",
    "ray_submission_id",
    "git_commit",
)


def _lineage(args: argparse.Namespace) -> dict[str, str]:
    lineage: dict[str, str] = {}
    if args.lineage is not None:
        try:
            document = json.loads(args.lineage.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidArgument(f"--lineage {args.lineage}: {exc}") from None
        if not isinstance(document, dict):
            raise InvalidArgument(f"--lineage {args.lineage}: a JSON object of lineage fields")
        unknown = sorted(set(document) - set(_LINEAGE_FIELDS))
        if unknown:
            raise InvalidArgument(
                f"--lineage: unknown fields {unknown}; known: {list(_LINEAGE_FIELDS)}"
            )
        for key, value in document.items():
            lineage[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if args.base_model or not lineage.get("base_model_id"):
        from llama_mapper.inference.base_model import DEFAULT_MODEL_ID

        lineage["base_model_id"] = (
            args.base_model or lineage.get("base_model_id") or DEFAULT_MODEL_ID
        )
    if not lineage.get("base_model_sha256"):
        from llama_mapper.inference.base_model import prepare_base_model
        from llama_mapper.platform.settings.common import common

        info = prepare_base_model(lineage["base_model_id"], common().cache_dir)
        lineage["base_model_sha256"] = info.sha256
    return lineage


def cmd_register(args: argparse.Namespace) -> int:
    from llama_mapper.inference.compat import check_adapter_dir
    from llama_mapper.registry.artifacts import (
        FileEntry,
        collect_upload_files,
        manifest_digest,
        sha256_file,
    )

    lineage = _lineage(args)
    # What the registry will check again, said here before any byte is uploaded.
    check_adapter_dir(args.dir, max_rank=16, base_model_id=lineage["base_model_id"])
    files = [
        FileEntry(name, sha256_file(path), path.stat().st_size)
        for name, path in collect_upload_files(args.dir)
    ]
    with _client(args) as client:
        response = client.register_directory(
            args.model,
            args.dir,
            lineage=lineage,
            # The same files registered again are the version they already are.
            idempotency_key=f"files:{manifest_digest(files)}",
            display_name=args.name or args.dir.name,
            description=args.reason,
        )
    version = response.version
    if args.json:
        body = MessageToDict(version, preserving_proto_field_name=True)
        print(json.dumps({"created": response.created, "version": body}, indent=2, sort_keys=True))
        return 0
    verb = "registered" if response.created else "already registered as"
    print(
        f"{args.model}: {verb} v{version.version} ({version.artifact_sha256[:12]}, {len(version.files)} files)"
    )
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    with _client(args) as client:
        entries = client.history(args.model, subject=args.subject)
    rows = [
        (
            e.id,
            _time(e.time),
            e.actor,
            _action(e.action),
            e.subject,
            e.from_value or "-",
            e.to_value or "-",
            e.reason,
        )
        for e in entries
    ]
    print_table(("#", "time", "actor", "action", "subject", "from", "to", "reason"), rows)
    return 0


def _action(value: int) -> str:
    from llama_mapper._proto.registry.v1 import registry_pb2 as pb

    return pb.HistoryAction.Name(value).removeprefix("HISTORY_ACTION_").lower()


def cmd_promote(args: argparse.Namespace) -> int:
    """The registry decides: a gated alias refuses a version whose latest gate failed and, for a
    model without a canary (the analyst), one without a passed gate for the profile."""
    if args.force and not args.reason:
        raise FailedPrecondition("--force needs --reason (the history records why)")
    with _client(args) as client:
        current = _current(client, args.model, args.alias)
        client.set_alias(
            args.model,
            args.alias,
            args.version,
            expected_version=current,
            reason=args.reason,
            force=args.force,
            hardware_profile=args.profile,
        )
    print(f"{args.model} {args.alias}: {current or '(unset)'} -> {args.version}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    with _client(args) as client:
        current = _current(client, args.model, args.alias)
        if current == 0:
            raise FailedPrecondition(f"{args.model} has no alias {args.alias!r} to roll back")
        target = args.to
        if target is None:
            # The move that set the current value says where the alias was before it.
            moves = [
                e
                for e in client.history(args.model, subject=args.alias)
                if e.to_value == str(current)
            ]
            if not moves or not moves[-1].from_value:
                raise FailedPrecondition(
                    f"{args.alias} of {args.model} has no earlier version; pass --to"
                )
            target = int(moves[-1].from_value)
        client.set_alias(
            args.model,
            args.alias,
            target,
            expected_version=current,
            reason=args.reason,
            force=args.force,
        )
    print(f"{args.model} {args.alias}: {current} -> {target} (rollback)")
    return 0


def _parse_targets(assignments: list[str]) -> dict[str, float]:
    values: dict[str, float] = {}
    for item in assignments:
        name, sep, raw = item.partition("=")
        if not sep or name not in TARGET_FIELDS:
            raise InvalidArgument(
                f"--set {item!r}: use FIELD=VALUE with FIELD one of {', '.join(TARGET_FIELDS)}"
            )
        try:
            values[name] = float(raw)
        except ValueError:
            raise InvalidArgument(f"--set {item!r}: {raw!r} is not a number") from None
    return values


def cmd_targets(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.set:
            if not args.profile:
                raise InvalidArgument("--set needs --profile")
            client.set_targets(
                args.model, args.profile, reason=args.reason, **_parse_targets(args.set)
            )
        targets = client.get_targets(args.model, args.profile)
    rows = [
        (
            t.hardware_profile,
            *(f"{getattr(t, n):g}" if t.HasField(n) else "-" for n in TARGET_FIELDS),
            t.updated_by,
        )
        for t in targets
    ]
    print_table(("profile", *TARGET_FIELDS, "set by"), rows)
    return 0
