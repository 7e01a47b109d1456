"""mapperctl: the command-line entry point (map, taxonomy, frameworks, and each service's commands)."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llama_mapper.cli.mapfile import DEFAULT_MAX_LINE_BYTES, map_stream
from llama_mapper.domain.errors import MapperError, Unavailable
from llama_mapper.platform.settings.serving import ServingClientSettings
from llama_mapper.platform.stack import use_local_token
from llama_mapper.platform.terminal import print_table

logger = logging.getLogger("mapperctl")


def _cmd_map(args: argparse.Namespace) -> int:
    if args.document:
        map_one = _document_mapper(args)
    elif args.rules_only:
        from llama_mapper.domain.rules import RulesMapper

        mapper = RulesMapper()

        def map_one(envelope: dict[str, Any]) -> dict[str, Any]:
            return mapper.map(
                envelope["detector"], envelope["output"], request_id=envelope.get("request_id")
            )

    else:
        # The hybrid mapper (rules first, the served adapter for the rest) behind the router.
        from llama_mapper.serving.client import MapperClient

        client = MapperClient(args.url)
        _require_router(client.url)

        def map_one(envelope: dict[str, Any]) -> dict[str, Any]:
            return client.map(
                envelope["detector"], envelope["output"], request_id=envelope.get("request_id")
            )

    schema = "document-input" if args.document else "detector-output"
    if args.crosswalk:
        # Resolved before any line is read, so an unknown scheme fails once, not on every line.
        from llama_mapper.domain.crosswalks import add_crosswalks, default_crosswalks

        crosswalks = default_crosswalks()
        schemes = [crosswalks.scheme(name).scheme for name in args.crosswalk]
        map_result = map_one
        result_schema = "document-output" if args.document else "mapper-output"

        def map_one(envelope: dict[str, Any]) -> dict[str, Any]:
            return add_crosswalks(map_result(envelope), schemes, crosswalks, schema=result_schema)

    lines, failures = map_stream(
        sys.stdin.buffer, sys.stdout, map_one, max_line_bytes=args.max_line_bytes, schema=schema
    )
    if failures:
        print(f"mapperctl map: {failures} of {lines} lines failed", file=sys.stderr)
    return 1 if failures else 0


def _document_mapper(args: argparse.Namespace) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """One document per line: through the router, or with the hybrid mapper here without a
    model (rules, then other.unknown for review: what the router answers without an engine)."""
    if not args.rules_only:
        from llama_mapper.serving.client import MapperClient

        client = MapperClient(args.url)
        _require_router(client.url)

        def map_remote(envelope: dict[str, Any]) -> dict[str, Any]:
            return client.map_document(
                envelope["outputs"],
                text=envelope.get("text"),
                text_sha256=envelope.get("text_sha256"),
                request_id=envelope.get("request_id"),
            )

        return map_remote

    from llama_mapper.domain.document import DetectorResult, build_document
    from llama_mapper.domain.errors import InvalidArgument
    from llama_mapper.inference.hybrid import HybridMapper

    hybrid = HybridMapper()

    def map_local(envelope: dict[str, Any]) -> dict[str, Any]:
        request_id = envelope.get("request_id") or str(uuid.uuid4())
        results = []
        for i, item in enumerate(envelope["outputs"]):
            try:
                outcome = hybrid.map(item["detector"], item["output"], request_id=request_id)
            except InvalidArgument as exc:
                raise InvalidArgument(f"$.outputs[{i}].output: {exc.message}") from None
            results.append(DetectorResult(item["detector"], outcome.result, outcome.findings))
        return build_document(
            results,
            taxonomy=hybrid.taxonomy,
            request_id=request_id,
            text=envelope.get("text"),
            text_sha256=envelope.get("text_sha256"),
        )

    return map_local


def _require_router(url: str) -> None:
    import httpx

    try:
        httpx.get(f"{url}/healthz", timeout=5.0).raise_for_status()
    except httpx.HTTPError:
        raise Unavailable(
            f"the serving endpoint is not reachable at {url} (start it with `mapperctl serve "
            "deploy`, or set --url / MAPPER_SERVING_URL); pass --rules-only to map with the "
            "rules mapper alone"
        ) from None


def _cmd_taxonomy_show(args: argparse.Namespace) -> int:
    from llama_mapper.domain.taxonomy import default_taxonomy

    taxonomy = default_taxonomy()
    if args.json:
        labels = [
            {"label": label.name, "description": label.description, "aliases": list(label.aliases)}
            for label in (taxonomy.labels[name] for name in taxonomy.names)
        ]
        print(json.dumps({"version": taxonomy.version, "labels": labels}, indent=2))
        return 0
    print(f"canonical taxonomy v{taxonomy.version}: {len(taxonomy.labels)} labels\n")
    rows = [
        (label.name, label.description)
        for label in (taxonomy.labels[name] for name in taxonomy.names)
    ]
    print_table(("label", "description"), rows)
    return 0


def _cmd_taxonomy_crosswalk(args: argparse.Namespace) -> int:
    from llama_mapper.domain.crosswalks import default_crosswalks
    from llama_mapper.domain.taxonomy import default_taxonomy

    taxonomy = default_taxonomy()
    crosswalk = default_crosswalks().scheme(args.scheme)
    mappings = [crosswalk.mappings[name] for name in taxonomy.names]
    if args.json:
        doc = {
            "scheme": crosswalk.scheme,
            "name": crosswalk.name,
            "scheme_version": crosswalk.scheme_version,
            "version": crosswalk.version,
            "source": crosswalk.source,
            "taxonomy_version": taxonomy.version,
            "ids": crosswalk.ids,
            "mappings": [
                {"label": m.label, "ids": list(m.ids), "partial": m.partial, "note": m.note}
                for m in mappings
            ],
        }
        print(json.dumps(doc, indent=2))
        return 0
    mapped = sum(1 for m in mappings if m.ids)
    print(
        f"{crosswalk.name} {crosswalk.scheme_version} (crosswalk {crosswalk.version_tag}, "
        f"taxonomy v{taxonomy.version}): {mapped} of {len(mappings)} labels have a counterpart\n"
    )
    rows = [
        (
            m.label,
            ", ".join(m.ids) or "-",
            (f"partial: {m.note}" if m.partial else m.note) if m.note else "",
        )
        for m in mappings
    ]
    print_table(("label", crosswalk.scheme, "note"), rows)
    return 0


def _cmd_taxonomy_validate(args: argparse.Namespace) -> int:
    from llama_mapper.domain.crosswalks import default_crosswalks
    from llama_mapper.domain.frameworks import default_frameworks
    from llama_mapper.domain.readers.base import known_detectors
    from llama_mapper.domain.tables import default_tables
    from llama_mapper.domain.taxonomy import check_version_lock, default_taxonomy, load_taxonomy

    taxonomy = load_taxonomy(Path(args.file)) if args.file else default_taxonomy()
    check_version_lock(taxonomy)
    tables = default_tables()
    frameworks = default_frameworks()
    crosswalks = default_crosswalks()
    readers = known_detectors()
    without_table = sorted(set(readers) - set(tables))
    if without_table:
        raise MapperError(f"detectors with a reader but no mapping table: {without_table}")
    print(
        f"taxonomy v{taxonomy.version}: {len(taxonomy.labels)} labels, "
        f"{len(tables)} mapping tables, {len(readers)} readers, "
        f"{len(frameworks.frameworks)} frameworks, {len(crosswalks.schemes)} crosswalks: ok"
    )
    return 0


def _cmd_taxonomy_lock(args: argparse.Namespace) -> int:
    from llama_mapper.domain.taxonomy import default_taxonomy, lock_path

    taxonomy = default_taxonomy()
    path = lock_path()
    lock = json.loads(path.read_text(encoding="utf-8"))
    recorded = lock.get(taxonomy.version)
    if recorded and recorded["digest"] != taxonomy.digest():
        raise MapperError(
            f"v{taxonomy.version} is already locked with other labels: bump the version first"
        )
    lock[taxonomy.version] = {"digest": taxonomy.digest(), "labels": len(taxonomy.labels)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(lock, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    print(f"locked taxonomy v{taxonomy.version} ({taxonomy.digest()[:12]})")
    return 0


def _cmd_frameworks_show(args: argparse.Namespace) -> int:
    from llama_mapper.domain.frameworks import default_frameworks
    from llama_mapper.domain.taxonomy import default_taxonomy

    label = default_taxonomy().get(args.label)
    refs = default_frameworks().controls(label.name)
    if args.json:
        print(json.dumps({"label": label.name, "controls": [r.to_dict() for r in refs]}, indent=2))
        return 0
    print(f"{label.name}: {label.description}\n")
    if not refs:
        print("maps to no control")
        return 0
    print_table(
        ("framework", "version", "control", "title"),
        [(r.framework, r.version, r.control, r.title) for r in refs],
    )
    return 0


# Each service contributes its own subcommands through `add_parser(subparsers)`.
_SUBCOMMAND_MODULES = (
    "llama_mapper.cli.analyze",
    "llama_mapper.cli.stack",
    "llama_mapper.cli.demo",
    "llama_mapper.cli.training",
    "llama_mapper.cli.registry",
    "llama_mapper.cli.datasets",
    "llama_mapper.cli.bench",
    "llama_mapper.cli.evaluation",
    "llama_mapper.cli.serving",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mapperctl",
        description="Map detector output to the canonical compliance taxonomy, and run the platform.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    map_parser = commands.add_parser(
        "map",
        help="map JSON Lines of detector output on stdin to canonical results on stdout",
        description='Reads one {"detector": NAME, "output": NATIVE_OUTPUT} per line on stdin and '
        "writes one canonical result (or one error object) per line on stdout, in order; "
        "with --document, one document (several detectors' outputs for one text) per line. "
        "Exits 1 when any line failed.",
    )
    map_parser.add_argument(
        "--rules-only", action="store_true", help="use the rules mapper alone (no model)"
    )
    map_parser.add_argument(
        "--document",
        action="store_true",
        help='read one document per line ({"outputs": [{"detector", "output"}, ...], "text"?, '
        '"text_sha256"?, "request_id"?}: several detectors on one text) and write one document '
        "result per line (schemas/document-output.json); with --rules-only an unknown detector "
        "is other.unknown for review, as the router answers it without a model",
    )
    map_parser.add_argument(
        "--url",
        default=ServingClientSettings().url,
        help="router of the serving stack (default: $MAPPER_SERVING_URL or %(default)s)",
    )
    map_parser.add_argument(
        "--max-line-bytes",
        type=int,
        default=DEFAULT_MAX_LINE_BYTES,
        help="refuse lines longer than this (default: %(default)s)",
    )
    map_parser.add_argument(
        "--crosswalk",
        action="append",
        default=[],
        metavar="SCHEME",
        help="add each result's labels in SCHEME (ailuminate, llama-guard, owasp-llm-top10, "
        "openguardrails) as `crosswalks`; repeat for several",
    )
    map_parser.set_defaults(func=_cmd_map)

    taxonomy = commands.add_parser(
        "taxonomy", help="show, validate or crosswalk the canonical taxonomy"
    )
    taxonomy_commands = taxonomy.add_subparsers(dest="taxonomy_command", required=True)
    show = taxonomy_commands.add_parser("show", help="list every label")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=_cmd_taxonomy_show)
    check = taxonomy_commands.add_parser(
        "validate", help="check taxonomy, version lock, mapping tables and framework mappings"
    )
    check.add_argument("--file", help="validate this taxonomy file instead of the shipped one")
    check.set_defaults(func=_cmd_taxonomy_validate)
    crosswalk = taxonomy_commands.add_parser(
        "crosswalk", help="each label's ids in another taxonomy (AILuminate, Llama Guard, ...)"
    )
    crosswalk.add_argument(
        "scheme", help="ailuminate, llama-guard, owasp-llm-top10 or openguardrails"
    )
    crosswalk.add_argument("--json", action="store_true", help="machine-readable output")
    crosswalk.set_defaults(func=_cmd_taxonomy_crosswalk)
    lock = taxonomy_commands.add_parser(
        "lock", help="record the current version's label digest (after a version bump)"
    )
    lock.set_defaults(func=_cmd_taxonomy_lock)

    frameworks = commands.add_parser("frameworks", help="framework controls per label")
    frameworks_commands = frameworks.add_subparsers(dest="frameworks_command", required=True)
    fshow = frameworks_commands.add_parser("show", help="the controls a label touches")
    fshow.add_argument("label", help="canonical label, e.g. pii.email_address")
    fshow.add_argument("--json", action="store_true", help="machine-readable output")
    fshow.set_defaults(func=_cmd_frameworks_show)

    settings = commands.add_parser(
        "settings", help="every MAPPER_* variable the code reads, with its default"
    )
    settings.add_argument("--json", action="store_true", help="machine-readable output")
    settings.set_defaults(func=_cmd_settings)

    for module in _SUBCOMMAND_MODULES:
        importlib.import_module(module).add_parser(commands)
    return parser


def _cmd_settings(args: argparse.Namespace) -> int:
    from llama_mapper.platform.settings import variables

    found = list(variables())
    if args.json:
        print(json.dumps([v.__dict__ for v in found], indent=2))
        return 0
    print_table(("variable", "default", "read by"), [(v.name, v.default, v.owner) for v in found])
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_local_token()
    # Ray 2.60 clusters run with token authentication; its clients need to be told to use it.
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return args.func(args)
    except MapperError as error:
        print(f"mapperctl: {error.code}: {error.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
