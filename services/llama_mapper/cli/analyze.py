"""`mapperctl analyze`: canonical results (what `mapperctl map` prints) in, risk assessments out."""

# One output line per input line, in order: {"line", "request_id", "framework", "assessments"},
# one assessment per finding of the result, in the result's order; a line that is not a canonical
# (or document) result gets an error object and the lines after it are still answered. Without a
# serving URL the hybrid analyst runs here on the rubric alone (remediation from the catalogue);
# with --url or MAPPER_SERVING_URL every finding goes through the router's /v1/analyze.

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from typing import IO, Any

from llama_mapper.cli.mapfile import (
    DEFAULT_MAX_LINE_BYTES,
    Line,
    error_object,
    read_lines,
    read_object,
)
from llama_mapper.domain import jsonio, rubric
from llama_mapper.domain.errors import InvalidArgument, MapperError
from llama_mapper.domain.schemas import validate, validator
from llama_mapper.platform.terminal import print_table

logger = logging.getLogger(__name__)

AnalyzeFn = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]


def parse_result(line: Line, max_bytes: int) -> dict[str, Any]:
    """A canonical result (schemas/mapper-output.json) or a document result (document-output)."""
    value = read_object(line, max_bytes, "a canonical result")
    if "error" in value and "findings" not in value:
        raise InvalidArgument("the line is an error object: mapperctl map did not map it")
    if "outputs" in value and validator("document-output").is_valid(value):
        return value
    validate("mapper-output", value)
    return value


def finding_context(result: dict[str, Any], index: int, base: dict[str, Any]) -> dict[str, Any]:
    """The given context, with co_labels from the result's other findings unless it names its
    own: findings in one result were found together."""
    context = dict(base)
    if "co_labels" not in context:
        label = result["findings"][index]["label"]
        others = sorted(
            {
                f["label"]
                for f in result["findings"]
                if f["label"] != label and not f["label"].startswith("other.")
            }
        )
        if others:
            context["co_labels"] = others
    return context


def analyze_stream(
    stream_in: IO[bytes],
    stream_out: IO[str] | None,
    framework: str,
    context: dict[str, Any],
    analyze_one: AnalyzeFn,
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    concurrency: int = 1,
) -> tuple[list[dict[str, Any]], int]:
    """Assesses every finding of every line; writes each line's answer as it goes when
    `stream_out` is set. Returns (answers, failures); a bad line never stops the ones after it.

    `concurrency` findings are in flight at once (the router batches what arrives together);
    answers still come out one per line, in the input's order."""
    answers: list[dict[str, Any]] = []
    failures = 0
    window: deque[tuple[Line, dict[str, Any] | None, list[Future[Any]], MapperError | None]]
    window = deque()

    def emit() -> None:
        nonlocal failures
        line, result, futures, error = window.popleft()
        answer: dict[str, Any]
        try:
            if error is not None:
                raise error
            assert result is not None
            assessments = []
            for i, future in enumerate(futures):
                try:
                    assessments.append(future.result())
                except InvalidArgument as exc:
                    raise InvalidArgument(f"$.findings[{i}]: {exc.message}") from None
            answer = {
                "line": line.number,
                "request_id": result["provenance"].get("request_id"),
                "framework": framework,
                "assessments": assessments,
            }
        except MapperError as failed:
            failures += 1
            answer = error_object(line.number, failed)
            # Metadata only: the line number and the reason, never the line itself.
            logger.info("line %d failed: %s", line.number, failed.code)
        answers.append(answer)
        if stream_out is not None:
            stream_out.write(json.dumps(answer, ensure_ascii=False, separators=(",", ":")) + "\n")
            stream_out.flush()

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for line in read_lines(stream_in, max_line_bytes):
            try:
                result = parse_result(line, max_line_bytes)
            except MapperError as error:
                window.append((line, None, [], error))
            else:
                futures = [
                    pool.submit(
                        analyze_one,
                        {"framework": framework, "finding": finding},
                        finding_context(result, i, context),
                    )
                    for i, finding in enumerate(result["findings"])
                ]
                window.append((line, result, futures, None))
            # Bounded memory: a few lines ahead of the one being written, no more.
            while window and (len(window) > 4 * max(1, concurrency) or _done(window[0][2])):
                emit()
        while window:
            emit()
    return answers, failures


def _done(futures: list[Future[Any]]) -> bool:
    return all(f.done() for f in futures)


def table_rows(answers: list[dict[str, Any]]) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for answer in answers:
        if "error" in answer:
            error = answer["error"]
            rows.append((error["line"], "-", "error", error["code"], error["message"][:60], "", ""))
            continue
        for i, a in enumerate(answer["assessments"]):
            rows.append(
                (
                    answer["line"],
                    i,
                    a["label"],
                    a["risk_level"],
                    ", ".join(a["controls"]) or "-",
                    a["methods"]["remediation"],
                    a["remediation"][0],
                )
            )
    return rows


def _local() -> AnalyzeFn:
    from llama_mapper.inference.analyst import analyze

    def analyze_one(body: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        return analyze(rubric.query(body["framework"], body["finding"], context))

    return analyze_one


def _remote(url: str) -> AnalyzeFn:
    from llama_mapper.cli.main import _require_router
    from llama_mapper.serving.client import MapperClient

    client = MapperClient(url)
    _require_router(client.url)

    def analyze_one(body: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        return client.analyze(body["framework"], body["finding"], context or None)

    return analyze_one


def _context(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    value = jsonio.loads(text, what="--context")
    try:
        validate("analyst-context", value)
    except InvalidArgument as exc:
        raise InvalidArgument(f"--context: {exc.message.split(': ', 1)[-1]}") from None
    for i, label in enumerate(value.get("co_labels") or ()):
        rubric.query("SOC2", {"label": label}, where=f"--context co_labels[{i}]")
    return value


def _cmd_analyze(args: argparse.Namespace) -> int:
    context = _context(args.context)
    url = args.url or os.environ.get("MAPPER_SERVING_URL")
    analyze_one = _remote(url) if url else _local()
    with ExitStack() as stack:
        stream = (
            sys.stdin.buffer if args.file in (None, "-") else stack.enter_context(_open(args.file))
        )
        answers, failures = analyze_stream(
            stream,
            None if args.table else sys.stdout,
            args.framework,
            context,
            analyze_one,
            max_line_bytes=args.max_line_bytes,
            concurrency=args.concurrency or (8 if url else 1),
        )
    if args.table:
        print_table(
            ("line", "#", "label", "risk", "controls", "remediation", "first step"),
            table_rows(answers),
        )
    if failures:
        print(f"mapperctl analyze: {failures} of {len(answers)} lines failed", file=sys.stderr)
    return 1 if failures else 0


def _open(path: str) -> IO[bytes]:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise InvalidArgument(f"{path}: {exc.strerror}") from None


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "analyze",
        help="risk assessments (risk level, controls, remediation) of canonical results",
        description="Reads canonical results, one per line (what `mapperctl map` prints, or "
        "--document results), from FILE or stdin, and writes one line per result: its "
        "assessments for FRAMEWORK, one per finding (schemas/analyst-output.json), or an error "
        "object for a line that is not a result. Risk level and controls come from the rubric; "
        "the remediation from the rubric's catalogue, or from the analyst adapter through the "
        "router when --url / MAPPER_SERVING_URL is set. Exits 1 when any line failed.",
    )
    parser.add_argument(
        "file", nargs="?", default="-", metavar="FILE", help="canonical results (default: stdin)"
    )
    parser.add_argument(
        "--framework", required=True, choices=rubric.FRAMEWORKS, help="compliance framework"
    )
    parser.add_argument(
        "--context",
        metavar="JSON",
        help='context for every finding (schemas/analyst-context.json), e.g. \'{"location": '
        '"output", "environment": "prod", "volume": 250}\'; co_labels default to the other '
        "labels of the same result",
    )
    parser.add_argument("--table", action="store_true", help="print a readable table instead")
    parser.add_argument(
        "--url",
        default=None,
        help="router of the serving stack (default: $MAPPER_SERVING_URL; unset: rules only)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=0,
        help="findings assessed at once through the router (default: 8 with --url, else 1); "
        "answers keep the input's order",
    )
    parser.add_argument(
        "--max-line-bytes",
        type=int,
        default=DEFAULT_MAX_LINE_BYTES,
        help="refuse lines longer than this (default: %(default)s)",
    )
    parser.set_defaults(func=_cmd_analyze)
